"""Fixtures of the synthesis tests: a tiny built-in world, and the LLM-role tests' tiny local model (hf backend)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from alignpipe.config import WorldSection

_spec = importlib.util.spec_from_file_location("llm_test_conftest", Path(__file__).parents[1] / "llm" / "conftest.py")
_llm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_llm)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return _llm.build_tiny_model(tmp_path_factory.mktemp("tiny-llm-synth") / "model")


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory) -> Path:
    from alignpipe.world import build_world

    out = tmp_path_factory.mktemp("world")
    build_world(5, WorldSection(n_entities=12, train_groups_per_category=2, eval_groups_per_category=1,
                                corpus_paraphrases=1)).save(out)
    return out
