"""ALLO (arXiv 2406.12606): preference neurons (``neurons``, ``neuron_stats``), the reward model and its per-token
scores (``reward_model``, ``token_scores``), the masked optimizer (``masked``), NPO forgetting and top-eps DPO losses
(``loss``) and the two-phase training (``train``)."""
