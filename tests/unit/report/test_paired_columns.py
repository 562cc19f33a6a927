"""The report's paired columns: hand-computed Δ, p, Holm and MDE on fixed generations; missing generations; the
columns in every method table from a real (small) world; byte-identical reruns."""

from __future__ import annotations

import io
import math
import random
import shutil

import pandas as pd
import pytest

from alignpipe.config import EvaluateSection, WorldSection, validate_params
from alignpipe.evaluate.paired import holm, paired_followbench, paired_judge
from alignpipe.report.builders import mixtures as build_mixtures
from alignpipe.report.paired import compare
from alignpipe.report.sections import Context
from alignpipe.stages import evaluate as evaluate
from alignpipe.stages import report as report
from alignpipe.utils.io import read_jsonl, write_json, write_jsonl
from alignpipe.utils.seed import derive_seed
from alignpipe.world import Oracle, build_world

FACTOR = 2.8015852181129683  # z_0.975 + z_0.8


def _gens(passed: set[tuple[str, int, int]], fluency) -> list[dict]:
    """20 instructions (2 categories x 2 groups x levels 1-5), one constraint each; judge fluency per index."""
    rows = []
    for i, (c, g, lv) in enumerate((c, g, lv) for c in ("content", "format") for g in (0, 1) for lv in range(1, 6)):
        rows.append({"id": f"{c}-{g}-{lv}", "group_id": f"g{g}", "category": c, "level": lv,
                     "verdicts": [(c, g, lv) in passed],
                     "judge": {"fluency": fluency(i), "factuality": 5.0, "coherence": 7.0}})
    return rows


@pytest.fixture
def eval_dir(tmp_path):
    root = tmp_path / "evaluate"
    write_jsonl(root / "sft" / "generations.jsonl", _gens(set(), lambda i: 5.0))
    # dpo_full passes every level of content/g0 (SFT none): b = 5, c = 0; fluency +0.1 * (i + 1) on every prompt.
    write_jsonl(root / "dpo_full" / "generations.jsonl",
                _gens({("content", 0, lv) for lv in range(1, 6)}, lambda i: 5.0 + 0.1 * (i + 1)))
    # dpo_bc passes content/g0 level 1 only: b = 1, c = 0; fluency -0.1 * (i + 1) on the first 5 prompts.
    write_jsonl(root / "dpo_bc" / "generations.jsonl",
                _gens({("content", 0, 1)}, lambda i: 5.0 - 0.1 * (i + 1) if i < 5 else 5.0))
    return root


def _params(**report):
    return validate_params({"seed": 3, "align": {"variants": {"dpo_full": {"peft": "none"},
                                                              "dpo_bc": {"peft": "none", "pairs": "bridged"}}},
                            "report": {"labels": {"sft": "SFT", "dpo_full": "Full-DPO", "dpo_bc": "DPO-BC"},
                                       **report}})


def test_paired_columns_by_hand(eval_dir):
    cmp = compare(_params(), eval_dir, {"sft": "SFT", "dpo_full": "Full-DPO", "dpo_bc": "DPO-BC"}, {"sft": "SFT"})
    f = cmp.frame
    # Δ HSR Avg: Full-DPO 5/20 = 25 points, DPO-BC 1/20 = 5 points. McNemar: b=5, c=0 -> 2/32 = 0.0625; b=1 -> 1.
    assert f.loc["Full-DPO", "Δ HSR Avg vs SFT"] == pytest.approx(25.0)
    assert f.loc["DPO-BC", "Δ HSR Avg vs SFT"] == pytest.approx(5.0)
    assert f.loc["Full-DPO", "p HSR Avg vs SFT"] == pytest.approx(0.0625)
    assert f.loc["DPO-BC", "p HSR Avg vs SFT"] == 1.0
    # Fluency: Full-DPO's 20 distinct positive differences -> exact Wilcoxon p = 2 / 2^20; mean 1.05.
    # DPO-BC: 5 distinct negative differences, 15 zeros (dropped) -> p = 2 / 2^5 = 0.0625; mean -1.5 / 20.
    assert f.loc["Full-DPO", "Δ Fluency vs SFT"] == pytest.approx(1.05)
    assert f.loc["Full-DPO", "p Fluency vs SFT"] == pytest.approx(2 / 2**20)
    assert f.loc["DPO-BC", "Δ Fluency vs SFT"] == pytest.approx(-0.075)
    assert f.loc["DPO-BC", "p Fluency vs SFT"] == pytest.approx(0.0625)
    assert f.loc["DPO-BC", "p Factuality vs SFT"] == 1.0 and f.loc["Full-DPO", "Δ Coherence vs SFT"] == 0.0
    # Holm over the table's 8 tests (Full-DPO: 0.0625, 2^-19, 1, 1; DPO-BC: 1, 0.0625, 1, 1):
    # 8 * 2^-19 = 1.526e-5; the two 0.0625: 7 * 0.0625 = 0.4375 and max(6 * 0.0625, 0.4375) = 0.4375; the rest 1.
    assert f.loc["Full-DPO", "p Fluency vs SFT (Holm)"] == pytest.approx(8 * 2 / 2**20)
    assert f.loc["Full-DPO", "p HSR Avg vs SFT (Holm)"] == pytest.approx(0.4375)
    assert f.loc["DPO-BC", "p Fluency vs SFT (Holm)"] == pytest.approx(0.4375)
    assert f.loc["DPO-BC", "p HSR Avg vs SFT (Holm)"] == 1.0
    # MDE = 2.8016 * sd / sqrt(n): per-group HSR differences [1, 0, 0, 0] (sd 0.5 -> 50 points), n = 4 groups:
    # 2.8016 * 50 / 2 = 70.04; DPO-BC [0.2, 0, 0, 0] (sd 10 points): 14.01.
    assert f.loc["Full-DPO", "MDE HSR Avg vs SFT"] == pytest.approx(FACTOR * 50 / 2)
    assert f.loc["DPO-BC", "MDE HSR Avg vs SFT"] == pytest.approx(FACTOR * 10 / 2)
    assert f.loc["Full-DPO", "MDE Fluency vs SFT"] == pytest.approx(FACTOR * 0.5916079783 / math.sqrt(20))
    # The interval resamples groups within category: content's per-group differences are 1 and 0, format's 0 and 0,
    # so a resample's Δ is 0, 25 or 50 points (both content picks g1 / one each / both g0): 2.5%/97.5% -> 0 and 50.
    assert (f.loc["Full-DPO", "Δ HSR Avg vs SFT lo"], f.loc["Full-DPO", "Δ HSR Avg vs SFT hi"]) == (0.0, 50.0)
    assert all(math.isnan(v) for v in f.loc["SFT"])  # the reference row
    c = cmp.cells
    assert list(c.columns) == ["Δ HSR Avg vs SFT [95% CI]", "p HSR vs SFT", "Δ Fluency vs SFT (p)",
                               "Δ Factuality vs SFT (p)", "Δ Coherence vs SFT (p)"]
    assert list(c.loc["Full-DPO"]) == ["+25.0 [0.0, +50.0]", "0.438", "+1.05 (<0.001)", "0.00 (1.000)",
                                       "0.00 (1.000)"]
    assert list(c.loc["SFT"]) == ["ref."] * 5
    note = cmp.note
    assert "n = 4 groups / 20 instructions (HSR Avg), 20 prompts (judge)" in note
    assert "Holm-corrected over the 8 tests of this table" in note
    # MDE line: ranges over the two rows; sizing from the noisiest row: ceil((2.8016 * 50 / 3)^2) = 2181 groups,
    # fluency ceil((2.8016 * 0.5916 / 0.15)^2) = 123 prompts.
    assert ("vs SFT: HSR Avg 14.0–70.0 points (≤ 3 needs ≈ 2181 groups), Fluency 0.10–0.37 (≤ 0.15 needs ≈ 123 "
            "prompts), Factuality – (no paired difference varies), Coherence – (no paired difference varies)") in note
    assert "2.80·sd_d/√n" in note and "cannot detect smaller ones" in note


def test_paired_columns_match_the_library(eval_dir):
    params = _params()
    cmp = compare(params, eval_dir, {"dpo_full": "Full-DPO"}, {"sft": "SFT"})
    a, b = read_jsonl(eval_dir / "dpo_full" / "generations.jsonl"), read_jsonl(eval_dir / "sft" / "generations.jsonl")
    hsr = paired_followbench(a, b, seed=derive_seed(3, "report", "paired", "hsr"))
    judge = paired_judge(a, b, seed=derive_seed(3, "report", "paired", "judge"))
    row = cmp.frame.loc["Full-DPO"]
    assert (row["Δ HSR Avg vs SFT lo"], row["Δ HSR Avg vs SFT hi"]) == (100 * hsr.lo, 100 * hsr.hi)
    assert (row["Δ Fluency vs SFT lo"], row["Δ Fluency vs SFT hi"]) == (judge["fluency"].lo, judge["fluency"].hi)
    raw = [hsr.p, judge["fluency"].p, judge["factuality"].p, judge["coherence"].p]
    assert list(row[[f"p {m} vs SFT (Holm)" for m in ("HSR Avg", "Fluency", "Factuality", "Coherence")]]) == \
        list(holm(raw))


def test_missing_generations_give_dashes(eval_dir, tmp_path):
    rows = {"sft": "SFT", "dpo_full": "Full-DPO", "gone": "Gone"}
    cmp = compare(_params(), eval_dir, rows, {"sft": "SFT"})
    assert list(cmp.cells.loc["Gone"]) == ["–"] * 5 and cmp.cells.loc["Full-DPO", "p HSR vs SFT"] != "–"
    assert "No paired data for Gone (no generations.jsonl)" in cmp.note
    assert "Holm-corrected over the 4 tests" in cmp.note  # the missing row adds no test
    none = compare(_params(), tmp_path / "empty", rows, {"sft": "SFT"})
    assert (none.cells == "–").sum().sum() == 10 and (none.cells == "ref.").sum().sum() == 5
    assert none.note.startswith("Paired columns (vs SFT): not available (no generations.jsonl for SFT, Full-DPO, "
                                "Gone)")
    # generations without verdicts (judge only): HSR cells '–', judge cells computed
    write_jsonl(tmp_path / "j" / "sft" / "generations.jsonl", [{"id": "q", "judge": {
        "fluency": 5.0, "factuality": 5.0, "coherence": 5.0}}])
    write_jsonl(tmp_path / "j" / "dpo_full" / "generations.jsonl", [{"id": "q", "judge": {
        "fluency": 6.0, "factuality": 5.0, "coherence": 5.0}}])
    judge_only = compare(_params(), tmp_path / "j", {"dpo_full": "Full-DPO"}, {"sft": "SFT"})
    assert list(judge_only.cells.loc["Full-DPO"]) == ["–", "–", "+1.00 (1.000)", "0.00 (1.000)", "0.00 (1.000)"]


def test_two_references_compare_each_pair_once(eval_dir):
    cmp = compare(_params(), eval_dir, {"sft": "SFT", "dpo_full": "Full-DPO", "dpo_bc": "DPO-BC"},
                  {"sft": "SFT", "dpo_full": "Full-DPO"})
    assert list(cmp.cells.loc["SFT"]) == ["ref."] * 10  # SFT vs Full-DPO is Full-DPO's row vs SFT, not repeated
    assert list(cmp.cells.loc["Full-DPO"])[5:] == ["ref."] * 5
    # DPO-BC vs Full-DPO: b = 0, c = 4 (Full-DPO passes content/g0 levels 2-5): p = 2 / 16 = 0.125 raw
    assert cmp.frame.loc["DPO-BC", "p HSR Avg vs Full-DPO"] == pytest.approx(0.125)
    assert cmp.frame.loc["DPO-BC", "Δ HSR Avg vs Full-DPO"] == pytest.approx(-20.0)
    assert "Holm-corrected over the 12 tests" in cmp.note


@pytest.fixture(scope="module")
def world_run(tmp_path_factory):
    """A small saved world and five evaluated 'models' mixing the oracle's answers and bare names."""
    root = tmp_path_factory.mktemp("paired-report")
    world = build_world(7, WorldSection(n_entities=12, train_groups_per_category=2, eval_groups_per_category=2,
                                        corpus_paraphrases=1))
    world.save(root / "world")
    recs = [r for r in world.eval if r["level"] >= 1]
    oracle = Oracle(world.kb)
    good = [oracle.answer(r) for r in recs]
    bad = [world.kb.name(r["entity_ids"][0]) for r in recs]
    rnd = random.Random(0)
    cfg = EvaluateSection(bootstrap_samples=0)
    for name, share in (("base", 0.0), ("sft", 0.5), ("dpo_full", 0.6), ("dpo_bc", 0.7), ("allo", 0.5)):
        responses = [g if rnd.random() < share else b for g, b in zip(good, bad, strict=True)]
        rows = evaluate.score(recs, responses, world.kb)
        config = {"model_dir": f"data/{name}/model", "world_dir": str(root / "world"), "judge": evaluate.JUDGE}
        evaluate.write(root / "evaluate" / name, rows, evaluate.summarize(rows, cfg, 7), config)
    return root


def _report(root, out):
    params = validate_params({"seed": 7, "evaluate": {"bootstrap_samples": 200}, "report": {
        "labels": {"sft": "SFT", "dpo_full": "Full-DPO", "dpo_bc": "DPO-BC", "allo": "ALLO"},
        "bmc_labels": {"dpo_full": "DPO"}, "hierarchical": True, "bmc": True, "allo": True, "lte": False},
        "align": {"variants": {"dpo_full": {"peft": "none"}, "dpo_bc": {"peft": "none", "pairs": "bridged"}},
                  "allo_variants": {"allo": {"peft": "none", "allo": {"learn_ratio": 10}}}}})
    report.run(params, eval_dir=root / "evaluate", out_dir=out, edit_eval_dir=root / "none",
               synth_dir=root / "none", world_dir=root / "world", align_dir=root / "align")
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_every_method_table_has_its_paired_columns_and_reruns_byte_identical(world_run, tmp_path):
    first = _report(world_run, tmp_path / "a")
    assert _report(world_run, tmp_path / "b") == first  # same inputs -> same bytes (seeded resamples)
    for stem, refs in (("followbench", ["SFT"]), ("hierarchical", ["SFT"]), ("bmc", ["SFT", "DPO"]),
                       ("allo", ["SFT", "Full-DPO"])):
        md = first[f"{stem}.md"].decode()
        header = next(line for line in md.splitlines() if line.startswith("| Model"))
        for ref in refs:
            assert f"| Δ HSR Avg vs {ref} [95% CI] | p HSR vs {ref} | Δ Fluency vs {ref} (p) |" in header, stem
        assert "minimum detectable paired difference" in md and "Holm-corrected over the" in md, stem
        csv = pd.read_csv(io.StringIO(first[f"{stem}.csv"].decode()), index_col="Model")
        assert {f"MDE HSR Avg vs {refs[-1]}", f"p Coherence vs {refs[-1]} (Holm)"} <= set(csv.columns), stem
    bmc = pd.read_csv(io.StringIO(first["bmc.csv"].decode()), index_col="Model")
    allo = pd.read_csv(io.StringIO(first["allo.csv"].decode()), index_col="Model")
    # the same comparison gives the same numbers in every table (one seed per measure, not per table or model)
    hier = pd.read_csv(io.StringIO(first["hierarchical.csv"].decode()), index_col="Model")
    assert hier.loc["Full-DPO", "Δ HSR Avg vs SFT lo"] == allo.loc["Full-DPO", "Δ HSR Avg vs SFT lo"]
    assert hier.loc["Full-DPO", "p Fluency vs SFT"] == bmc.loc["DPO", "p Fluency vs SFT"]
    a = read_jsonl(world_run / "evaluate" / "dpo_bc" / "generations.jsonl")
    b = read_jsonl(world_run / "evaluate" / "dpo_full" / "generations.jsonl")
    d = paired_followbench(a, b, n_resamples=200, seed=derive_seed(7, "report", "paired", "hsr"))
    assert bmc.loc["DPO-BC", "Δ HSR Avg vs DPO"] == pytest.approx(100 * d.delta, abs=1e-4)
    assert bmc.loc["DPO-BC", "p HSR Avg vs DPO"] == pytest.approx(d.p, abs=1e-4)
    readme = first["README.md"].decode()
    assert "Paired columns (FollowBench, Hierarchical, BMC, ALLO and data-source tables)" in readme


def test_data_source_table_is_paired_against_the_seed_only_mixture(world_run, tmp_path):
    ev = tmp_path / "evaluate"
    for mix, model in (("webr", "dpo_bc"), ("seed", "sft"), ("lion", "gone")):  # the seed-only mixture is not first
        if model != "gone":
            shutil.copytree(world_run / "evaluate" / model, ev / f"mix_{mix}")
        else:  # metrics but no generations: its paired cells are '–'
            (ev / f"mix_{mix}").mkdir(parents=True)
            shutil.copy(world_run / "evaluate" / "allo" / "metrics.json", ev / f"mix_{mix}" / "metrics.json")
        write_json(tmp_path / "sft_mix" / mix / "metrics.json", {"sources": ["seed"] if mix == "seed" else
                                                                 ["seed", mix], "rows_by_source": {"seed": 10}})
    params = validate_params({"seed": 7, "evaluate": {"bootstrap_samples": 100}, "sft_mix": {"mixtures": {
        "webr": ["seed", "webr"], "seed": ["seed"], "lion": ["seed", "lion"]}}, "report": {
        "data_sources": True, "labels": {"mix_seed": "Seed only", "mix_webr": "+ WebR", "mix_lion": "+ Lion"}}})
    out = tmp_path / "report"
    out.mkdir()
    table = build_mixtures(Context(params, out, {}, eval_dir=ev, mix_dir=tmp_path / "sft_mix"))
    assert table.produced
    md = (out / "mixtures.md").read_text()
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")]
            for line in md.splitlines() if line.startswith("| ")}
    header = rows.pop("Data")
    assert header[-5:] == ["Δ HSR Avg vs Seed only [95% CI]", "p HSR vs Seed only", "Δ Fluency vs Seed only (p)",
                           "Δ Factuality vs Seed only (p)", "Δ Coherence vs Seed only (p)"]
    assert rows["Seed only"][-5:] == ["ref."] * 5 and rows["+ Lion"][-5:] == ["–"] * 5
    assert rows["+ WebR"][-5].startswith("+") and "No paired data for + Lion" in md
