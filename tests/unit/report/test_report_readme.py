"""The report's README gathers every registered table with its provenance, and lists the ones not produced;
Hierarchical Alignment's pairwise W/T/L through roles.judge (oracle) equals the stored-score comparison."""

from __future__ import annotations

import pandas as pd
import pytest

from alignpipe.config import EvaluateSection, WorldSection, validate_params
from alignpipe.stages import evaluate as evaluate
from alignpipe.report import sections
from alignpipe.stages import report as report
from alignpipe.utils.io import read_jsonl, write_json
from alignpipe.world import Oracle, build_world


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A small saved world, three evaluated 'models' (teacher answers vs bare names) and synthesize metrics."""
    root = tmp_path_factory.mktemp("report-inputs")
    world = build_world(7, WorldSection(n_entities=12, train_groups_per_category=2, eval_groups_per_category=1,
                                        corpus_paraphrases=1))
    world.save(root / "world")
    recs = [r for r in world.eval if r["level"] >= 1]
    oracle = Oracle(world.kb)
    cfg = EvaluateSection(bootstrap_samples=0)
    for name, responses in (("base", [world.kb.name(r["entity_ids"][0]) for r in recs]),
                            ("sft", [oracle.answer(r) for r in recs]),
                            ("dpo", [world.kb.name(r["entity_ids"][0]) for r in recs])):
        rows = evaluate.score(recs, responses, world.kb)
        config = {"model_dir": f"data/{name}/model", "world_dir": str(root / "world"), "judge": evaluate.JUDGE}
        evaluate.write(root / "evaluate" / name, rows, evaluate.summarize(rows, cfg, 7), config)
    write_json(root / "synthesize" / "metrics.json", {
        "pages": 6, "rows": 5, "rows_by_type": {"WI-all": 2, "WI-part": 1, "WR-all": 2}, "no_persona": 0,
        "no_request": 1, "refusals_removed": 0, "duplicates_removed": 1, "same_page_removed": 0,
        "request_words_mean": 20.5, "response_words_mean": 80.0, "roles": {"total": {"calls": 17, "unparseable": 1}},
        "lion": {"rows": 4, "rounds": [{"round": 1}, {"round": 2}]}})
    write_json(root / "synthesize" / "config.json", {"input": "data/world/pages.jsonl",
                                                     "roles": {"teacher": {"backend": "oracle"}}})
    return root, len(recs)


def _run(root, out, pairwise_judge):
    params = validate_params({"seed": 7, "evaluate": {"bootstrap_samples": 0}, "report": {
        "labels": {"sft": "SFT", "dpo": "DPO"}, "hierarchical": True, "bmc": True, "allo": True, "reference": "sft",
        "lte": False, "pairwise_judge": pairwise_judge}, "align": {"variants": {"dpo": {"peft": "none"}}},
        "roles": {"cache_dir": str(root / "llm")}})
    report.run(params, eval_dir=root / "evaluate", out_dir=out, edit_eval_dir=root / "none",
               synth_dir=root / "synthesize", world_dir=root / "world", align_dir=root / "align")
    return (out / "README.md").read_text()


def test_readme_lists_every_table_with_provenance(inputs, tmp_path):
    root, n = inputs
    text = _run(root, tmp_path / "r", "roles")
    index = {line.split("](#")[1].split(")")[0]: line for line in text.splitlines() if line.startswith("| [")}
    assert list(index) == ["claims", "followbench", "followbench_official", "training", "errors", "hierarchical", "bmc",
                           "allo", "mixtures", "lte", "data_sources"]
    assert "not produced: report.claims is false" in index["claims"]
    assert "| produced |" in index["errors"] and "[errors.csv](errors.csv)" in index["errors"]
    assert "alignpipe.world.Judge.errors + verifiers" in index["errors"]
    assert f"not produced: no align variant's metrics.json under {root / 'align'}" in index["training"]
    assert "not produced: report.data_sources is false" in index["mixtures"]
    assert "not produced: no BMC variant (pairs: bridged or token_weights: bmc) in align.variants" in index["bmc"]
    assert "not produced: no ALLO variant in align.allo_variants" in index["allo"]
    assert "| produced |" in index["followbench"] and "[hsr_by_level.png](hsr_by_level.png)" in index["followbench"]
    assert "SFT (`data/sft/model`), DPO (`data/dpo/model`)" in index["followbench"]
    assert f"SFT: {len({r['group_id'] for r in read_jsonl(root / 'evaluate/sft/generations.jsonl')})} groups" \
        in index["followbench"]
    assert "not produced: no model evaluated with evaluate.benchmark: followbench" in index["followbench_official"]
    assert "not produced: report.lte is false" in index["lte"] and "Not produced: report.lte is false." in text
    assert "roles.judge (oracle), both orders" in index["hierarchical"]
    assert f"{n} prompt pairs per model vs SFT" in index["hierarchical"]
    assert "[pairwise/dpo.jsonl](pairwise/dpo.jsonl)" in index["hierarchical"]
    assert "| WebR WR-all | 2 |" in text and "| Lion (2 rounds) | 4 |" in text and "[data_sources.csv](data_sources.csv)" in index["data_sources"]
    assert "6 pages, 5 rows; role calls 17, unparseable 1" in index["data_sources"]
    assert "![hsr_by_level.png](hsr_by_level.png)" in text and "not** the numbers published" in text
    for f in ("followbench.csv", "hierarchical.csv", "data_sources.csv", "pairwise/dpo.jsonl"):
        assert (tmp_path / "r" / f).is_file()
    raw = read_jsonl(tmp_path / "r" / "pairwise" / "dpo.jsonl")  # the judge's raw outputs, both orders
    assert len(raw) == n and all(len(r["raw"]) == 2 and r["raw"][0].startswith("Fluency: ") for r in raw)

    # The oracle's pairwise verdicts give the same W/T/L as comparing the stored world-judge scores.
    _run(root, tmp_path / "s", "scores")
    by_roles = pd.read_csv(tmp_path / "r" / "hierarchical.csv", index_col="Model")
    by_scores = pd.read_csv(tmp_path / "s" / "hierarchical.csv", index_col="Model")
    pd.testing.assert_frame_equal(by_roles, by_scores)
    assert by_roles.loc["DPO", "Factuality W/T/L"] != f"0/{n}/0"  # a real comparison, not all ties


def test_a_registered_builder_lands_in_the_readme(inputs, tmp_path, monkeypatch):
    root, _ = inputs
    monkeypatch.setattr(sections, "BUILDERS", dict(sections.BUILDERS))

    @sections.register("extra", "Extra (test builder)")
    def extra(ctx):
        (ctx.out / "extra.csv").write_text("Model,score\nSFT,1\n")
        return sections.Table("extra", "Extra (test builder)", True, "| Model | score |\n|---|---:|\n| SFT | 1 |\n",
                              ["extra.csv"], "SFT", "world", "none", "1 row")

    with pytest.raises(ValueError, match="registered twice"):
        sections.register("extra", "again")(extra)
    text = _run(root, tmp_path / "r", "scores")
    assert "| [Extra (test builder)](#extra) | produced | SFT | world | none | 1 row | [extra.csv](extra.csv) |" in text
    assert "| SFT | 1 |" in text and (tmp_path / "r" / "extra.csv").is_file()
