"""The synthesize stage (WebR) end to end: oracle on the world's pages and on real web text, the hf backend on
a sample of web_en_1k.json with a kill-and-resume that repeats no request, and the rows feeding the sft stage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alignpipe.config import validate_params
from alignpipe.stages import synthesize as stage
from alignpipe_ops import runlog
from alignpipe.utils.io import DataError


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _check_outputs(out: Path, metrics: dict) -> list[dict]:
    rows = _read(out / "webr.jsonl")
    assert all(set(r) == {"prompt_id", "messages"} and [m["role"] for m in r["messages"]] == ["user", "assistant"]
               and all(m["content"].strip() for m in r["messages"]) for r in rows)
    assert len({r["prompt_id"] for r in rows}) == len(rows) == metrics["rows"] == sum(metrics["rows_by_type"].values())
    assert sum(metrics["planned"].values()) == metrics["pages"]
    lost = (metrics["no_request"] + sum(metrics["refusals_removed"].values())
            + sum(metrics["duplicates_removed"].values()) + metrics["same_page_removed"])
    assert metrics["rows"] == metrics["pages"] - lost
    sft = _read(out / "sft_webr.jsonl")
    assert [s["id"] for s in sft] == [r["prompt_id"] for r in rows]
    assert json.loads((out / "metrics.json").read_text()) == metrics
    return rows


def test_oracle_on_world_pages_is_deterministic(world_dir, tmp_path):
    params = validate_params({"seed": 5, "synthesize": {"lion": {"enabled": False}}})
    m = stage.run(params, world_dir, tmp_path / "a")
    rows = _check_outputs(tmp_path / "a", m)
    assert m["pages"] == 12 and m["planned"] == {"WI_all": 4, "WI_part": 4, "WR_all": 2, "WR_part": 2}
    assert m["rows"] >= 6 and {"WI_all", "WR_all"} <= set(m["rows_by_type"])
    assert m["roles"]["generator"]["calls"] == 12 + 12  # a persona and a request per page
    assert set(m["roles"]["total"]) == {"calls", "unparseable", "refusals"}  # requests, cache hits: the run record
    stage.run(params, world_dir, tmp_path / "b")
    for name in ("webr.jsonl", "sft_webr.jsonl", "webr_meta.jsonl", "metrics.json", "config.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    types = {m["prompt_id"]: m["type"] for m in _read(tmp_path / "a" / "webr_meta.jsonl")}
    for r in rows:  # every world page starts with its navigation line: WI turns carry the page, WR turns do not
        assert ("| Home |" in r["messages"][0]["content"]) == types[r["prompt_id"]].startswith("WI")


def test_oracle_on_a_sample_of_web_en_1k(shared_data, tmp_path):
    params = validate_params({"synthesize": {"webr": {"input": str(shared_data / "webr" / "web_en_1k.json"),
                                                      "max_pages": 24}, "lion": {"enabled": False}}})
    m = stage.run(params, tmp_path / "no-world", tmp_path / "out")
    _check_outputs(tmp_path / "out", m)
    assert m["pages"] == 24 and m["rows"] >= 12
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert cfg["input"].endswith("web_en_1k.json") and len(cfg["input_sha256"]) == 64


def test_hf_backend_on_web_en_1k_resumes_without_repeating_a_request(shared_data, tiny_model_dir, tmp_path,
                                                                      monkeypatch):
    hf = {"backend": "hf", "model": str(tiny_model_dir), "batch_size": 4}
    params = validate_params({
        "roles": {"teacher": hf, "generator": hf},
        "synthesize": {"webr": {"input": str(shared_data / "webr" / "web_en_1k.json"), "max_pages": 6,
                                "persona_max_tokens": 8, "request_max_tokens": 12, "response_max_tokens": 12},
                       "lion": {"enabled": False}},
    })  # fmt: skip
    # A run "killed" after the requests were written: personas and requests are in the disk cache.
    pages, roles = stage.load(params, tmp_path / "no-world")
    persona = stage.personas(params, pages, roles)
    stage.requests(params, stage.plan(params, pages), persona, roles)
    first = roles.metrics()["generator"]
    assert first["requests"] == first["calls"] == 12 and first["truncated_prompts"] >= 6  # long pages are cut
    # The rerun asks the generator nothing new; only the teacher's calls are made (the run record counts them:
    # they depend on what the cache held, so metrics.json has only calls, unparseable outputs and refusals).
    monkeypatch.setenv("DVC_STAGE", "synthesize")
    m = stage.run(params, tmp_path / "no-world", tmp_path / "out")
    usage = [r["counters"] for r in runlog.read("synthesize") if r["event"] == "roles"]
    gen, teacher = usage[0]["generator"], usage[0]["teacher"]
    assert (gen["requests"], gen["cache_hits"], gen["completion_tokens"]) == (0, 12, 0)
    assert teacher["requests"] > 0 and teacher["cache_hits"] == 0 and teacher["completion_tokens"] > 0
    assert m["roles"]["generator"] == {"calls": 12, "unparseable": gen["unparseable"], "refusals": gen["refusals"]}
    _check_outputs(tmp_path / "out", m)
    # A second rerun pays nothing at all and writes the same bytes.
    m2 = stage.run(params, tmp_path / "no-world", tmp_path / "out2")
    usage = [r["counters"] for r in runlog.read("synthesize") if r["event"] == "roles"]
    assert usage[1]["total"]["requests"] == 0 and usage[1]["total"]["cache_hits"] == usage[0]["total"]["calls"]
    for name in ("webr.jsonl", "metrics.json"):
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "out2" / name).read_bytes(), name


def test_rows_load_as_sft_data(world_dir, tmp_path):
    from alignpipe.train.sft import load_sft_data

    stage.run(validate_params({"seed": 5, "synthesize": {"lion": {"enabled": False}}}), world_dir, tmp_path / "out")
    data = load_sft_data([world_dir / "sft.jsonl", tmp_path / "out" / "sft_webr.jsonl"])
    n_webr = len(_read(tmp_path / "out" / "sft_webr.jsonl"))
    assert len(data) == len(_read(world_dir / "sft.jsonl")) + n_webr and n_webr > 0


def test_bad_input_names_the_record_and_bad_mixture_fails_early(tmp_path):
    bad = tmp_path / "pages.jsonl"
    bad.write_text('{"webpage": "fine text"}\n{"page": "wrong key"}\n')
    with pytest.raises(DataError, match=r"pages.jsonl line 2: missing field 'webpage'"):
        stage.run(validate_params({"synthesize": {"webr": {"input": str(bad)}, "lion": {"enabled": False}}}), tmp_path,
                  tmp_path / "out")
    from alignpipe.config import ConfigError

    with pytest.raises(ConfigError, match=r"sft.data = \['seed', 'webr'\]: 'webr' needs synthesize.webr.enabled"):
        validate_params({"sft": {"data": ["seed", "webr"]}, "synthesize": {"webr": {"enabled": False}}})


def test_without_persona_ablation(world_dir, tmp_path):
    params = validate_params({"seed": 5, "synthesize": {"webr": {"persona": False}, "lion": {"enabled": False}}})
    m = stage.run(params, world_dir, tmp_path / "o")
    _check_outputs(tmp_path / "o", m)
    assert m["roles"]["generator"]["calls"] == 12  # requests only: no persona call
    meta = _read(tmp_path / "o" / "webr_meta.jsonl")
    assert meta and all(r["persona"] == "" for r in meta)
    rows = _read(tmp_path / "o" / "webr.jsonl")
    assert not any("As a " in r["messages"][0]["content"] for r in rows)  # the oracle's persona voice is gone
