"""Lion (YJiangcm/Lion): the instruction pool and its filters (``pool``) and the adversarial distillation rounds
(``rounds``: imitation, discrimination, generation)."""
