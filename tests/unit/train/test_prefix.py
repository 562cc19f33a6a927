"""Frozen-prefix reuse (alignpipe.train.prefix): block-restricted LoRA started at its lowest trained layer on
cached hidden states gives the full forward's logits, loss and gradients; it stays off where it would not."""

import pytest
import torch

from alignpipe.train.prefix import FrozenPrefix, first_trained_layer


def _lora(sft_dir, layers, **config):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(sft_dir / "model", **config)
    return get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                                            layers_to_transform=layers, init_lora_weights=False))


def _batch(vocab, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = [12, 7, 12, 3]
    ids = torch.randint(4, vocab, (len(lengths), 12), generator=g)
    mask = (torch.arange(12)[None, :] < torch.tensor(lengths)[:, None]).long()
    return ids.masked_fill(mask == 0, 0), mask


def _loss_and_grads(model, ids, mask):
    model.zero_grad()
    logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
    logp = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    loss = -(logp * mask[:, 1:]).sum() / mask[:, 1:].sum()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return logits.detach(), loss.detach(), grads


@pytest.mark.parametrize("layers", [[4, 5], [2, 3]], ids=["global", "mid"])
def test_loss_and_gradients_equal_the_full_forward(sft_dir, layers):
    model = _lora(sft_dir, layers)
    model.train()
    ids, mask = _batch(model.config.vocab_size)
    full = _loss_and_grads(model, ids, mask)
    prefix = FrozenPrefix.install_if_frozen(model)
    assert prefix is not None and prefix.first == layers[0]
    for step in range(2):  # the first call computes the prefix states (misses), the second reuses them (hits)
        got = _loss_and_grads(model, ids, mask)
        real = mask.bool()
        assert torch.allclose(got[0][real], full[0][real], atol=1e-5)  # logits at every real token
        assert torch.allclose(got[1], full[1], atol=1e-6)
        assert got[2].keys() == full[2].keys() and len(got[2]) == 3 * 2 * len(layers)
        for name in full[2]:
            assert torch.allclose(got[2][name], full[2][name], atol=1e-6, rtol=1e-4), name
    assert prefix.stats() == {"first_trained_layer": layers[0], "hits": 4, "misses": 4, "bypassed": 0,
                              "cached_sequences": 4}
    # the cached state of a sequence is the one a full forward carries into the first trained layer
    seen, cached = {}, dict(prefix.cache)
    hook = model.get_base_model().model.layers[layers[0]].register_forward_pre_hook(
        lambda mod, args: seen.setdefault("h", args[0].detach()))
    prefix.remove()
    with torch.no_grad():
        model(input_ids=ids[:1], attention_mask=mask[:1], use_cache=False)
    hook.remove()
    key = ids[0, :12].numpy().tobytes()
    assert torch.allclose(cached[key], seen["h"][0], atol=1e-6)
    assert key not in prefix.cache  # remove() dropped the cache
    assert "forward" not in model.get_base_model().model.__dict__


def test_generation_and_left_padding_bypass_the_cache(sft_dir):
    model = _lora(sft_dir, [4, 5]).eval()
    prefix = FrozenPrefix.install_if_frozen(model)
    ids, mask = _batch(model.config.vocab_size)
    left = torch.flip(mask, dims=[1])
    with torch.no_grad():
        model(input_ids=ids, attention_mask=left, use_cache=False)  # left padding: not ones-then-zeros
        model.generate(input_ids=ids[:1, :5], attention_mask=mask[:1, :5], max_new_tokens=3, do_sample=False)
    assert prefix.hits == 0 and prefix.misses == 0 and prefix.bypassed >= 2


def test_off_where_a_frozen_prefix_does_not_exist(sft_dir):
    from transformers import AutoModelForCausalLM

    assert FrozenPrefix.install_if_frozen(_lora(sft_dir, [0, 1])) is None  # the bottom layer trains
    full = AutoModelForCausalLM.from_pretrained(sft_dir / "model")
    assert first_trained_layer(full.model) is None  # full fine-tuning: the embeddings train
    assert FrozenPrefix.install_if_frozen(full) is None
    assert FrozenPrefix.install_if_frozen(_lora(sft_dir, [4, 5], attention_dropout=0.1)) is None  # not a function


def test_global_align_trains_the_same_with_and_without_reuse(store, sft_dir, helpers, tmp_path):
    """Two epochs of Global-Align through the align stage's trainer: the second epoch runs on cached states only,
    and the trained adapter equals the one trained with the full forward every step."""
    from alignpipe.stages import align

    prefs, ref_dir = store
    weights, stats = {}, {}
    for reuse in (False, True):
        params = helpers.make_params(prefix_reuse=reuse, trainer={"num_train_epochs": 2, "learning_rate": 5e-3})
        rows, _, ref, model, tok, _ = align.prepare(params, prefs, ref_dir, sft_dir)
        trainer = align.build_trainer(params, "global", align.get_variant(params, "global"), model, tok, rows, ref,
                                      tmp_path / f"ckpt-{reuse}")
        metrics = align.train(trainer)
        weights[reuse] = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" in n}
        callbacks = [cb for cb in trainer.callback_handler.callbacks if isinstance(cb, align.LogPrefixReuse)]
        stats[reuse] = callbacks[0].prefix.stats() if callbacks else None
        assert metrics["steps"] == 8
    assert stats[False] is None
    n_seq = 2 * len(rows)  # chosen and rejected rows of every pair, once per epoch
    assert stats[True]["first_trained_layer"] == 4 and stats[True]["misses"] <= n_seq
    assert stats[True]["hits"] >= n_seq  # the whole second epoch
    assert weights[True].keys() == weights[False].keys()
    for name, w in weights[False].items():
        assert torch.allclose(weights[True][name], w, atol=1e-5), name


def test_reuse_only_when_training_revisits_pairs(store, sft_dir, helpers, tmp_path):
    """One epoch visits every sequence once: a cache would never be read, so none is installed."""
    from alignpipe.stages import align

    prefs, ref_dir = store
    installed = {}
    for epochs in (1, 2):
        params = helpers.make_params(trainer={"num_train_epochs": epochs})
        rows, _, ref, model, tok, _ = align.prepare(params, prefs, ref_dir, sft_dir)
        trainer = align.build_trainer(params, "global", align.get_variant(params, "global"), model, tok, rows, ref,
                                      tmp_path / f"ckpt-{epochs}")
        installed[epochs] = any(isinstance(cb, align.LogPrefixReuse) for cb in trainer.callback_handler.callbacks)
        assert align.revisits_pairs(trainer) == (epochs == 2)
    assert installed == {1: False, 2: True}
