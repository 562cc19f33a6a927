"""ONE global threshold over all parameters: exactly the top r% (ties at the threshold all kept), and the
authors' pooled bf16 approximation as an option."""

import pytest
import torch

from alignpipe.methods.allo.neurons import global_masks, kth_largest, official_threshold, overlap, weight_delta
from alignpipe.methods.allo.neuron_stats import by_layer, locate, mask_stats


def _scores(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"model.embed_tokens.weight": torch.rand(50, 8, generator=g),
            "model.layers.0.self_attn.q_proj.weight": torch.rand(8, 8, generator=g) * 3,
            "model.layers.1.mlp.up_proj.weight": torch.rand(16, 8, generator=g) * 0.1,
            "model.norm.weight": torch.rand(8, generator=g)}


@pytest.mark.parametrize("ratio", [0.5, 5.0, 10.0, 37.5, 100.0])
def test_exact_threshold_selects_exactly_the_global_top_r_percent(ratio):
    scores = _scores()
    flat = torch.cat([s.reshape(-1) for s in scores.values()])
    k = max(1, int(flat.numel() * ratio / 100))
    masks, thr = global_masks(scores, ratio)
    picked = torch.cat([s.reshape(-1)[m.reshape(-1).bool()] for s, m in zip(scores.values(), masks.values())])
    assert picked.numel() == k  # distinct random scores: no ties
    assert thr == float(torch.topk(flat, k).values[-1])
    assert set(picked.tolist()) == set(torch.topk(flat, k).values.tolist())  # ONE threshold across tensors
    # the tensor with large scores takes far more than r% of its entries, the small-score one none (not per-tensor)
    if ratio == 10.0:
        assert masks["model.layers.0.self_attn.q_proj.weight"].float().mean() > 0.3
        assert masks["model.layers.1.mlp.up_proj.weight"].sum() == 0


def test_ties_at_the_threshold_are_all_kept():
    scores = {"a": torch.tensor([5.0, 4.0, 3.0, 3.0, 3.0, 1.0]), "b": torch.tensor([3.0, 0.5, 0.0, 0.0])}
    masks, thr = global_masks(scores, 30.0)  # N = 10, k = 3: the 3rd largest is 3.0, held by 4 entries
    assert thr == 3.0
    assert masks["a"].tolist() == [1, 1, 1, 1, 1, 0] and masks["b"].tolist() == [1, 0, 0, 0]


def test_kth_largest_is_exact_on_awkward_floats():
    values = torch.tensor([1e-30, 3e-8, 3.0000002e-8, 7.5, 7.4999995, 0.0, 1e10])
    for k in range(1, len(values) + 1):
        assert kth_largest({"x": values}, k) == float(torch.sort(values, descending=True).values[k - 1])


def test_official_approximation_pools_per_tensor_top_2r_in_bf16():
    scores = _scores(1)
    masks, thr = global_masks(scores, 10.0, method="official")
    assert thr == official_threshold(scores, 10.0)
    n = sum(int(m.sum()) for m in masks.values())
    exact = sum(int(m.sum()) for m in global_masks(scores, 10.0)[0].values())
    # The q_proj tensor holds more than 2r% of the global top entries but may only contribute 2r% of itself to
    # the pool, so the pooled k-th value is lower and the count drifts above r%.
    assert n >= exact and abs(thr - global_masks(scores, 10.0)[1]) > 0
    with pytest.raises(ValueError, match="'exact' or 'official'"):
        global_masks(scores, 10.0, method="nope")


def test_weight_delta_overlap_and_stats():
    before = {"model.layers.1.mlp.up_proj.weight": torch.zeros(2, 2), "model.norm.weight": torch.ones(2)}
    after = {"model.layers.1.mlp.up_proj.weight": torch.tensor([[1.0, -2.0], [0.0, 0.5]]),
             "model.norm.weight": torch.tensor([1.0, 4.0])}
    d = weight_delta(before, after)
    assert d["model.layers.1.mlp.up_proj.weight"].tolist() == [[1.0, 2.0], [0.0, 0.5]]
    masks, _ = global_masks(d, 50.0)  # N = 6, k = 3: 3.0, 2.0, 1.0
    rows = mask_stats(masks)
    assert rows == [{"layer": 1, "module": "mlp.up_proj", "selected": 2, "total": 4},
                    {"layer": None, "module": "norm", "selected": 1, "total": 2}]
    assert by_layer(rows, 2) == [0.0, 50.0]
    assert locate("model.layers.12.self_attn.q_proj.weight") == (12, "self_attn.q_proj")
    assert overlap(masks, masks)["jaccard"] == 1.0
