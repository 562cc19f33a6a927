"""Byte-level BPE tokenizer for the built-in model, with a chat template TRL can mask.

Usage::

    from alignpipe.models.tokenizer import train_tokenizer
    tok = train_tokenizer(open("data/world/corpus.txt"), TokenizerSection(vocab_size=2048))
    tok.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True, tokenize=False)
    # '<|bos|><|user|>\\nHi<|eos|><|assistant|>\\n'

Every turn ends with ``<|eos|>``, so "stop at eos" is also "stop at the end of the assistant turn", and the
assistant's ``<|eos|>`` sits inside ``{% generation %}`` so TRL's assistant-only loss trains the model to stop.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from alignpipe.config import TokenizerSection

BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"
ROLE_TOKENS = {"user": "<|user|>", "assistant": "<|assistant|>", "system": "<|system|>"}
# Order fixes the ids: bos=0, eos=1, pad=2, then the role markers.
SPECIAL_TOKENS = [BOS, EOS, PAD, *ROLE_TOKENS.values()]

# One line per turn header so the prompt rendered alone is a token prefix of prompt + completion (TRL's
# completion mask relies on it). The eos that closes an assistant turn is inside the generation block.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('role must be system, user or assistant, got ' + message['role']) }}"
    "{% endif %}"
    "{{ '<|' + message['role'] + '|>\\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] }}{{ eos_token }}{% endgeneration %}"
    "{% else %}"
    "{{ message['content'] }}{{ eos_token }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)


_SPECIAL_SPLIT = re.compile("|".join(re.escape(t) for t in SPECIAL_TOKENS))


def _pieces(corpus: Iterable[str]) -> Iterator[str]:
    # Encoding cuts text at special tokens before BPE; training does the same here, so literal "<|user|>" in a
    # corpus (chat-formatted dialogues) does not spend merges on "<|" and "|>".
    for text in corpus:
        for piece in _SPECIAL_SPLIT.split(text):
            if piece.strip():
                yield piece


def train_tokenizer(
    corpus: Iterable[str], section: TokenizerSection | None = None, padding_side: str = "right"
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``corpus`` and wrap it for transformers.

    Args:
        corpus: texts (documents or lines; a file object works); blank ones are skipped. Special-token strings in
            the text (e.g. a chat-formatted dialogue) are encoded as those tokens, so they are not learned as BPE.
        section: vocabulary size (special tokens and the 256 byte symbols included) and min merge frequency.
        padding_side: "right" for training collators, "left" for batched generation.

    Returns:
        A ``PreTrainedTokenizerFast`` with bos/eos/pad set and :data:`CHAT_TEMPLATE`. Training is deterministic:
        the same corpus and section give an identical ``tokenizer.json``.
    """
    section = section or TokenizerSection()
    backend = Tokenizer(models.BPE())
    # add_prefix_space=False: a word at line start and after a space differ, as in GPT-2; no text is invented.
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=section.vocab_size,
        min_frequency=section.min_frequency,
        show_progress=False,
        special_tokens=SPECIAL_TOKENS,
        # All 256 byte symbols up front: any UTF-8 text encodes, with no unknown token.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    backend.train_from_iterator(_pieces(corpus), trainer=trainer)
    return wrap_tokenizer(backend, padding_side=padding_side)


def wrap_tokenizer(backend: Tokenizer, padding_side: str = "right") -> PreTrainedTokenizerFast:
    """Wrap a ``tokenizers.Tokenizer`` holding :data:`SPECIAL_TOKENS` with special tokens and chat template."""
    missing = [t for t in SPECIAL_TOKENS if backend.token_to_id(t) is None]
    if missing:
        raise ValueError(f"tokenizer lacks the special tokens {missing}")
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=list(ROLE_TOKENS.values()),
        padding_side=padding_side,
        # Documents are packed with explicit bos/eos in pretraining and the chat template adds its own,
        # so plain encode() adds nothing.
        add_bos_token=False,
        add_eos_token=False,
        clean_up_tokenization_spaces=False,
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok
