"""MaskedAdamW: Adam moments from the full gradient, update only where the mask is 1, unmasked weight decay;
after masked training every parameter outside the mask is bit-identical; foreign mask files are rejected."""

import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from alignpipe.methods.allo.masked import MaskedAdamW, load_masks
from alignpipe.utils.io import DataError


def test_one_step_by_hand():
    p = torch.nn.Parameter(torch.tensor([1.0, 2.0, -1.0, 0.5]))
    mask = torch.tensor([1.0, 0.0, 1.0, 0.0])
    opt = MaskedAdamW([p], {p: mask}, lr=0.1, betas=(0.9, 0.999), eps=1e-8)
    g = torch.tensor([0.2, -0.4, 0.0, 1.0])
    p.grad = g.clone()
    opt.step()
    m, v = 0.1 * g, 0.001 * g * g
    step = 0.1 * math.sqrt(1 - 0.999) / (1 - 0.9)
    expected = torch.tensor([1.0, 2.0, -1.0, 0.5]) - step * m * mask / (v.sqrt() + 1e-8)
    assert torch.allclose(p.detach(), expected, atol=1e-7)
    assert p[1].item() == 2.0 and p[3].item() == 0.5  # masked: exactly unchanged
    state = opt.state[p]
    assert torch.allclose(state["exp_avg"], m) and torch.allclose(state["exp_avg_sq"], v)  # moments everywhere


def test_all_ones_mask_matches_adamw_and_decay_is_unmasked():
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(5))
    b = torch.nn.Parameter(a.detach().clone())
    ours = MaskedAdamW([a], {a: torch.ones(5)}, lr=0.01)
    ref = torch.optim.AdamW([b], lr=0.01, weight_decay=0.0)
    for _ in range(3):
        g = torch.randn(5)
        a.grad, b.grad = g.clone(), g.clone()
        ours.step()
        ref.step()
    assert torch.allclose(a, b, atol=1e-6)
    p = torch.nn.Parameter(torch.tensor([1.0, 1.0]))
    opt = MaskedAdamW([p], {p: torch.tensor([1.0, 0.0])}, lr=0.1, weight_decay=0.5)
    p.grad = torch.tensor([0.0, 0.0])
    opt.step()
    assert p[1].item() == pytest.approx(1.0 - 0.1 * 0.5)  # decayed although masked, as the authors' optimizer
    opt2 = MaskedAdamW([q := torch.nn.Parameter(torch.tensor([1.0, 1.0]))], {q: torch.tensor([1.0, 0.0])}, lr=0.1,
                       weight_decay=0.5, mask_weight_decay=True)
    q.grad = torch.zeros(2)
    opt2.step()
    assert q[1].item() == 1.0


def _random_masks(model, ratio, seed=0):
    from alignpipe.methods.allo.neurons import global_masks

    g = torch.Generator().manual_seed(seed)
    scores = {n: torch.rand(p.shape, generator=g) for n, p in model.named_parameters()}
    return global_masks(scores, ratio)[0]


def test_masked_training_leaves_every_other_weight_bit_identical(store, sft_dir, helpers, tmp_path):
    from alignpipe.stages import align
    from alignpipe.methods.allo.train import mask_file

    prefs, ref_dir = store
    params = helpers.make_params(variants={"top": {"peft": "none", "allo": {
        "forget": False, "learn_ratio": 10, "token_weights": False, "top_eps": 1.0}}})
    rows, _, ref, model, tok, _ = align.prepare(params, prefs, ref_dir, sft_dir)
    masks = _random_masks(model, 10.0)
    neurons = tmp_path / "neurons"
    mask_file(neurons, 10.0).parent.mkdir(parents=True)
    save_file(masks, str(mask_file(neurons, 10.0)))
    out = tmp_path / "out"
    metrics = align.run(params, "top", prefs, ref_dir, sft_dir, out, neurons_dir=neurons, rewards_dir=tmp_path)
    trained = load_file(str(out / "model" / "model.safetensors"))
    sft = load_file(str(sft_dir / "model" / "model.safetensors"))
    changed_inside = 0
    for name, m in masks.items():
        outside = m == 0
        assert torch.equal(trained[name][outside], sft[name][outside]), name
        changed_inside += int((trained[name][~outside] != sft[name][~outside]).sum())
    assert changed_inside > 0 and metrics["updated_params"] == changed_inside
    assert metrics["learn_mask_params"] == sum(int(m.sum()) for m in masks.values())


def test_mask_from_another_model_shape_is_rejected(sft_dir, helpers, tmp_path):
    from alignpipe.models import load_model

    other = helpers.build_sft_dir(tmp_path / "other", n_layers=3, hidden=16)
    small, _ = load_model(other / "model")
    path = tmp_path / "mask.safetensors"
    save_file(_random_masks(small, 5.0), str(path))
    model, _ = load_model(sft_dir / "model")
    with pytest.raises(DataError, match="different model shape.*shapes differ.*rerun the neurons stage"):
        load_masks(path, model)
    with pytest.raises(DataError, match="neuron mask not found"):
        load_masks(tmp_path / "nope.safetensors", model)
