"""The papers' methods, each in its own package, below the stages that run them and above the domain code.

- ``hierarchical``: Hierarchical Alignment's layer blocks (local / intermediate / global thirds) and their LoRA.
- ``bmc``: BMC's bridged pseudo-winners, token-correlation weights and weighted DPO loss, and its trainer hook.
- ``allo``: ALLO's preference neurons, reward-model token scores, masked optimizer, NPO forgetting and top-eps DPO.
- ``lion``: Lion's adversarial distillation (instruction pool, rounds of imitation / discrimination / generation).
- ``webr``: WebR's instruction reconstruction from raw web pages.
- ``lte``: LTE's edit records, BM25 edit store and edit-following template (learning to edit).
"""
