"""Tiny fixtures for the align tests: a BPE tokenizer + a 6-layer hidden-32 Llama saved as the "SFT model",
synthetic preference pairs, and params with small trainer settings. Everything is built here: no downloads."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml

from alignpipe.config import ArchitectureSection, Params, TokenizerSection, validate_params

SUBJECTS = ["Velmora", "the harbor", "Orin", "the red tower", "Kasimir", "the old mill", "Lysa", "the market"]
GOOD = ["{s} is a quiet harbor town with a market.", "{s} was founded long ago by fishers.",
        "{s} has a tall tower and an old mill.", "People in {s} trade fish and salt."]
BAD = ["no.", "I do not know.", "{s} {s} {s}.", "tower tower mill."]


def make_pairs(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        s = rng.choice(SUBJECTS)
        rows.append({
            "id": f"p{i:04d}",
            "prompt": [{"role": "user", "content": f"Describe {s}. Mention the word 'harbor'."}],
            "chosen": [{"role": "assistant", "content": rng.choice(GOOD).format(s=s)}],
            "rejected": [{"role": "assistant", "content": rng.choice(BAD).format(s=s)}],
            "score_chosen": 1.0,
        })
    return rows


def write_pairs(directory: Path, rows: list[dict]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "pairs.jsonl", "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    return directory


def build_sft_dir(directory: Path, n_layers: int = 6, hidden: int = 32, seed: int = 0) -> Path:
    from alignpipe.models.pretrain import build_model
    from alignpipe.models.tokenizer import train_tokenizer

    lines = [g.format(s=s) for g in GOOD + BAD for s in SUBJECTS] + [f"Describe {s}." for s in SUBJECTS]
    tok = train_tokenizer(lines, TokenizerSection(vocab_size=300, min_frequency=1))
    arch = ArchitectureSection(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=n_layers,
                               num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256)
    model = build_model(arch, tok, seed=seed)
    model.save_pretrained(directory / "model")
    tok.save_pretrained(directory / "model")
    return directory


# The plain variants of params.yaml (the one source of variants: the typed model has no defaults of its own).
REPO_VARIANTS = yaml.safe_load((Path(__file__).resolve().parents[3] / "params.yaml").read_text())["align"]["variants"]


def make_params(**align) -> Params:
    align.setdefault("variants", REPO_VARIANTS)
    trainer = {"per_device_train_batch_size": 4, "max_steps": -1, "num_train_epochs": 1, "logging_steps": 1,
               "save_steps": 2, "precompute_ref_batch_size": 8}
    trainer.update(align.pop("trainer", {}))
    section = {"max_length": 64, "lora": {"r": 4, "lora_alpha": 8}, "trainer": trainer, **align}
    return validate_params({"seed": 7, "align": section})


@pytest.fixture(scope="session")
def sft_dir(tmp_path_factory) -> Path:
    return build_sft_dir(tmp_path_factory.mktemp("sft"))


@pytest.fixture
def prefs_dir(tmp_path) -> Path:
    return write_pairs(tmp_path / "preferences", make_pairs(16))


@pytest.fixture
def params() -> Params:
    return make_params()


@pytest.fixture(scope="session")
def helpers():
    """The factories above, for tests that need non-default pairs, models or params."""
    from types import SimpleNamespace

    return SimpleNamespace(make_pairs=make_pairs, write_pairs=write_pairs, build_sft_dir=build_sft_dir,
                           make_params=make_params)


@pytest.fixture(scope="session")
def store(sft_dir, tmp_path_factory):
    """A pair file and its stored reference log-probs (computed once for the session): (prefs_dir, reflogps_dir)."""
    from alignpipe.stages import reflogps

    root = tmp_path_factory.mktemp("store")
    prefs = write_pairs(root / "preferences", make_pairs(16))
    with pytest.MonkeyPatch.context() as mp:  # the per-test work-dir fixture is not active at session scope
        mp.setenv("ALIGNPIPE_WORK_DIR", str(root / "_work"))
        reflogps.run(make_params(), prefs, sft_dir, root / "reflogps")
    return prefs, root / "reflogps"
