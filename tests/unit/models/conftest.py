"""Tiny fixtures for the models tests: a ~40-document corpus, a 300-token BPE tokenizer, a 2-layer hidden-32 Llama
(~20k parameters) briefly pretrained so its next-token distributions are peaked. Built here; no downloads."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from alignpipe.config import ArchitectureSection, Params, TokenizerSection, validate_params

NAMES = ["Velmora", "Quenth", "Arlis", "Dorvan", "Kasimir", "Lysa"]
THINGS = ["harbor", "lantern", "bridge", "market", "river", "tower"]
ARCH = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
        "num_key_value_heads": 2, "max_position_embeddings": 128}
TOK = {"vocab_size": 300, "min_frequency": 1}


def make_corpus(n: int = 40, seed: int = 0) -> list[str]:
    """n short documents; every fourth is a chat-formatted dialogue, as the world may put in its corpus."""
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        name, a, b = rng.choice(NAMES), rng.choice(THINGS), rng.choice(THINGS)
        if i % 4 == 3:
            docs.append(f"<|user|>\nDescribe {name}.<|eos|><|assistant|>\n{name} has a {a} near the {b}.<|eos|>")
        else:
            docs.append(f"{name} has a {a} near the {b}. People in {name} like the {a}.\nThe {b} is old.")
    return docs


def make_params(seed: int = 3, trainer: dict | None = None, chat_copies: int = 0, **sections) -> Params:
    base_trainer = {"max_steps": 12, "save_steps": 4, "logging_steps": 2, "per_device_train_batch_size": 4,
                    "disable_tqdm": True}
    base_trainer.update(trainer or {})
    raw = {"seed": seed, "base": {"tokenizer": TOK, "architecture": ARCH, "block_size": 32, "trainer": base_trainer,
                                      "chat_copies": chat_copies}}
    raw.update(sections)
    return validate_params(raw)


def write_world(directory: Path, docs: list[str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "corpus.txt").write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    # Train dialogues (the world's sft.jsonl): the base stage adds them to pretraining in chat form.
    rows = [
        {"id": f"d{i}", "prompt": [{"role": "user", "content": f"Describe {n}."}],
         "completion": [{"role": "assistant", "content": f"{n} has a lamp near the door."}]}
        for i, n in enumerate(NAMES)
    ]
    (directory / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return directory


@pytest.fixture(scope="session")
def corpus() -> list[str]:
    return make_corpus()


@pytest.fixture(scope="session")
def tokenizer(corpus):
    from alignpipe.models.tokenizer import train_tokenizer

    return train_tokenizer(corpus, TokenizerSection(**TOK))


@pytest.fixture(scope="session")
def arch() -> ArchitectureSection:
    return ArchitectureSection(**ARCH)


@pytest.fixture
def world_dir(tmp_path, corpus) -> Path:
    return write_world(tmp_path / "world", corpus)


@pytest.fixture(scope="session")
def base_dir(tmp_path_factory, corpus) -> Path:
    """A saved base stage output (model/ + metrics), pretrained for 40 steps: loadable, with peaked outputs."""
    from alignpipe.stages import base as stage

    root = tmp_path_factory.mktemp("base")
    world = write_world(root / "world", corpus)
    with pytest.MonkeyPatch.context() as mp:  # the per-test work-dir fixture is not active at session scope
        mp.setenv("ALIGNPIPE_WORK_DIR", str(root / "_work"))
        stage.run(make_params(trainer={"max_steps": 40, "save_steps": 40, "learning_rate": 1e-2}), world, root / "out")
    return root / "out"


@pytest.fixture(scope="session")
def helpers():
    from types import SimpleNamespace

    return SimpleNamespace(make_corpus=make_corpus, make_params=make_params, write_world=write_world, NAMES=NAMES)
