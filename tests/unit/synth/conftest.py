"""The tiny local model directory of the LLM-role tests, reused for WebR on the hf backend."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("llm_test_conftest", Path(__file__).parents[1] / "llm" / "conftest.py")
_llm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_llm)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return _llm.build_tiny_model(tmp_path_factory.mktemp("tiny-llm-synth") / "model")
