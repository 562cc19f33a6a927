"""Byte-level BPE tokenizer: lossless round trip, special tokens, chat template (with TRL masks), determinism."""

import pytest

from alignpipe.config import TokenizerSection
from alignpipe.models.tokenizer import BOS, EOS, PAD, ROLE_TOKENS, SPECIAL_TOKENS, train_tokenizer


@pytest.mark.parametrize(
    "text",
    ["Velmora has a harbor.", "  two  spaces\nand a newline\n", "Ünïcödé, 数字 and emoji 😀!", "UNSEEN zqx"],
)
def test_round_trip_is_lossless(tokenizer, text):
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert tokenizer.unk_token_id is None or tokenizer.unk_token_id not in ids  # byte-level: nothing is unknown


def test_special_tokens_and_vocab(tokenizer):
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == (BOS, EOS, PAD)
    ids = {tokenizer.convert_tokens_to_ids(t) for t in [BOS, EOS, PAD, *ROLE_TOKENS.values()]}
    assert len(ids) == 6 and max(ids) < len(tokenizer)
    assert len(tokenizer) <= 300
    assert tokenizer("Velmora")["input_ids"][0] != tokenizer.bos_token_id  # plain encode adds no bos/eos
    # The corpus's literal "<|user|>" strings are encoded as the special token and never learned as merges.
    assert {t for t in tokenizer.get_vocab() if "<|" in t or "|>" in t} == set(SPECIAL_TOKENS)
    assert tokenizer("<|user|>\nHi")["input_ids"][0] == tokenizer.convert_tokens_to_ids("<|user|>")


def test_padding_side_is_configurable(corpus):
    tok = train_tokenizer(corpus[:10], TokenizerSection(vocab_size=300), padding_side="left")
    batch = tok(["a", "a longer text"], padding=True)
    assert tok.padding_side == "left" and batch["input_ids"][0][0] == tok.pad_token_id


def test_chat_template_renders_turns_and_generation_prompt(tokenizer):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Describe Velmora."}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == "<|bos|><|system|>\nBe brief.<|eos|><|user|>\nDescribe Velmora.<|eos|><|assistant|>\n"
    full = messages + [{"role": "assistant", "content": "A harbor town."}]
    assert tokenizer.apply_chat_template(full, tokenize=False).endswith("<|assistant|>\nA harbor town.<|eos|>")
    with pytest.raises(Exception, match="role must be"):
        tokenizer.apply_chat_template([{"role": "tool", "content": "x"}], tokenize=False)


def test_chat_template_masks_assistant_content_and_eos(tokenizer):
    """TRL needs: prompt tokens are a prefix of prompt+completion, and {% generation %} covers content + eos."""
    prompt = [{"role": "user", "content": "Describe Velmora."}]
    full = prompt + [{"role": "assistant", "content": "Velmora has a harbor."}]
    p_ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True,
                                          return_dict=True)["input_ids"]
    out = tokenizer.apply_chat_template(full, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = out["input_ids"], out["assistant_masks"]
    assert ids[: len(p_ids)] == p_ids
    assert mask == [0] * len(p_ids) + [1] * (len(ids) - len(p_ids))
    assert ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ids[len(p_ids):], skip_special_tokens=True) == "Velmora has a harbor."


def test_training_is_deterministic(corpus, tmp_path):
    section = TokenizerSection(vocab_size=300, min_frequency=1)
    for name in ("a", "b"):
        train_tokenizer(corpus, section).save_pretrained(tmp_path / name)
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert "tokenizer.json" in files and "chat_template.jinja" in files
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f


def test_saved_tokenizer_reloads_with_template(tokenizer, tmp_path):
    from transformers import AutoTokenizer

    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded.chat_template == tokenizer.chat_template
    assert loaded.pad_token_id == tokenizer.pad_token_id and loaded.eos_token_id == tokenizer.eos_token_id
    assert loaded("Velmora has a harbor.")["input_ids"] == tokenizer("Velmora has a harbor.")["input_ids"]
