"""Training on TRL: supervised fine-tuning (``sft``), DPO with stored reference log-probs (``dpo``, ``reflogps``,
``prepare``, ``pairs``), the training loop and its log (``loop``), and the one module that overrides TRL internals
(``trl_ext``). The methods' trainers (:mod:`alignpipe.methods`) build on these; the stages run them."""
