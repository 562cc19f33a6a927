"""generate/sample: batched left-padded greedy equals one-by-one greedy, order kept, seeded sampling."""

import sys

import pytest
import torch

from alignpipe.models import generate, load_model, sample
from alignpipe.models.generate import _batches, _decode, encode_prompts

PROMPTS = [
    [{"role": "user", "content": "Describe Velmora."}],
    [{"role": "system", "content": "Be brief."},
     {"role": "user", "content": "Tell me about the old tower of Quenth."}],
    [{"role": "user", "content": "Hi"}],
    [{"role": "user", "content": "Describe Lysa and the market near the river, please."}],
    [{"role": "user", "content": "Describe Arlis."}],
]


@pytest.fixture(scope="module")
def loaded(base_dir):
    return load_model(base_dir / "model")


def test_batched_greedy_equals_unbatched_and_keeps_order(loaded):
    model, tok = loaded
    one_by_one = [generate(model, tok, [p], max_new_tokens=12, batch_size=1)[0] for p in PROMPTS]
    batched = generate(model, tok, PROMPTS, max_new_tokens=12, batch_size=3)
    assert batched == one_by_one
    assert any(batched) and len(set(batched)) > 1  # the test model says something, and not the same thing
    assert generate(model, tok, PROMPTS[::-1], 12, 5) == one_by_one[::-1]
    assert generate(model, tok, PROMPTS, 12, 3) == batched  # deterministic
    assert generate(model, tok, [], 12, 3) == []


def test_left_padding_regardless_of_tokenizer_setting(loaded):
    model, tok = loaded
    tok.padding_side = "right"
    try:
        assert generate(model, tok, PROMPTS[:2], 8, 2) == [generate(model, tok, [p], 8, 1)[0] for p in PROMPTS[:2]]
    finally:
        tok.padding_side = "left"


def test_prompts_end_with_the_generation_prompt(loaded):
    _, tok = loaded
    ids = encode_prompts(tok, PROMPTS[:1])[0]
    assert ids[0] == tok.bos_token_id and tok.decode(ids[-2:]) == "<|assistant|>\n"


def test_decode_cuts_at_the_first_stop_token(loaded):
    _, tok = loaded
    words = tok(" harbor town")["input_ids"]
    new = torch.tensor(words + [tok.eos_token_id] + words + [tok.pad_token_id])
    assert _decode(tok, new, [tok.eos_token_id]) == "harbor town"


def test_sample_is_seeded_and_returns_k_per_prompt(loaded):
    model, tok = loaded
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = sample(model, tok, PROMPTS[:3], 10, 2, num_return_sequences=4, temperature=1.5, top_p=0.95, seed=7)
    assert torch.equal(before, torch.get_rng_state())  # the caller's RNG is untouched
    assert len(a) == 3 and all(len(k) == 4 for k in a)
    assert sample(model, tok, PROMPTS[:3], 10, 2, num_return_sequences=4, temperature=1.5, top_p=0.95, seed=7) == a
    b = sample(model, tok, PROMPTS[:3], 10, 2, num_return_sequences=4, temperature=1.5, top_p=0.95, seed=8)
    assert a != b
    assert len({s for k in a for s in k}) > 1  # samples differ from each other
    with pytest.raises(ValueError, match="temperature"):
        sample(model, tok, PROMPTS[:1], 4, 1, temperature=0)


def test_batches_of_long_prompts_are_cut_to_the_attention_budget():
    short, long = [0] * 100, [0] * 3000  # 3,000 + 160 tokens: (3160 / 1024)^2 = 9.5 sequences' worth each
    ids = [short] * 40 + [long] * 7
    batches = list(_batches(ids, 32, 160))
    assert sorted(i for b in batches for i in b) == list(range(47))  # every prompt once
    # long ones first, 32 // 9.5 = 3 per batch: 3 + 3, then the 7th leads a batch of 3 with 2 short ones; 38 short
    assert [len(b) for b in batches] == [3, 3, 3, 32, 6]
    assert list(_batches([short] * 40, 32, 160)) == [list(range(32)), list(range(32, 40))]  # short: unchanged


def test_long_prompts_generate_like_one_at_a_time(loaded, monkeypatch):
    model, tok = loaded
    prompts = [[{"role": "user", "content": "word " * n}] for n in (3, 200, 5, 180)]
    monkeypatch.setattr(sys.modules["alignpipe.models.generate"], "BATCH_SEQ_TOKENS", 64)  # batches of 1-2 here
    assert generate(model, tok, prompts, 6, 4) == [generate(model, tok, [p], 6, 1)[0] for p in prompts]
