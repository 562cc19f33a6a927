"""The claims table: claims picked by what each variant does; hand-computed effects, Holm and verdicts; LTE's and
Lion's paired differences by hand; the builder's files and its switch."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from alignpipe.config import validate_params
from alignpipe.report.builders import claims as build_claims
from alignpipe.report.claims import claims_of, claims_table, lion_diff, lte_diff, verdict
from alignpipe.report.sections import Context
from alignpipe.utils.io import write_jsonl


def _gens(fluency, coherence=lambda i: 7.0, passed=frozenset()) -> list[dict]:
    """20 instructions (2 categories x 2 groups x levels 1-5), one constraint each; judge scores per index."""
    rows = []
    for i, (c, g, lv) in enumerate((c, g, lv) for c in ("content", "format") for g in (0, 1) for lv in range(1, 6)):
        rows.append({"id": f"{c}-{g}-{lv}", "group_id": f"g{g}", "category": c, "level": lv,
                     "verdicts": [(c, g, lv) in passed],
                     "judge": {"fluency": fluency(i), "factuality": 5.0, "coherence": coherence(i)}})
    return rows


def _params(variants=None, **extra):
    variants = variants or {"dpo_full": {"peft": "none"}}
    labels = {"sft": "SFT", **({"dpo_full": "Full-DPO"} if "dpo_full" in variants else {})}
    raw = {"seed": 3, "align": {"variants": variants}, "synthesize": {"lion": {"enabled": False}},
           "report": {"labels": labels, "lte": False, "claims": True}}
    for k, v in extra.items():
        raw.setdefault(k, {}).update(v)
    return validate_params(raw)


def test_claims_follow_the_variants_settings_not_their_names():
    variants = {"plain": {"peft": "none"}, "bottom": {"peft": "lora", "block": "local"},
                "middle": {"peft": "lora", "block": "mid"}, "top": {"peft": "lora", "block": "global"},
                "bridge": {"peft": "none", "pairs": "bridged"}, "weights": {"peft": "none", "token_weights": "bmc"},
                "both": {"peft": "none", "pairs": "bridged", "token_weights": "bmc"}}
    claims = claims_of(_params(variants))
    pairs = {(c.claim, c.metric, c.a, c.b) for c in claims}
    assert ("Local-Align improves fluency", "fluency", "bottom", "sft") in pairs
    assert ("Global-Align improves factual consistency", "factuality", "top", "sft") in pairs
    assert {(c.a, c.b) for c in claims if c.claim == "Global-Align is best on logical coherence"} == {
        ("top", "plain"), ("top", "bottom"), ("top", "middle")}  # no all-layer LoRA variant: no such row
    assert {(c.a, c.b, c.direction) for c in claims if c.claim.startswith(("Full DPO", "..."))} == {
        ("plain", "sft", +1), ("plain", "sft", -1)}
    assert ("DPO-BMC beats DPO-BC (modeling on top of bridging)", "hsr_avg", "both", "bridge") in pairs
    assert ("DPO-MC beats DPO (token-correlation weights)", "hsr_avg", "weights", "plain") in pairs
    assert not any(c.paper in ("ALLO", "LTE", "Lion", "WebR") for c in claims)  # nothing in the run tests them


def test_allo_claims_pick_the_full_method_and_its_ablations():
    allo = {"allo": {"peft": "none", "allo": {"forget_ratio": 5, "learn_ratio": 10}},
            "no_mask": {"peft": "none", "allo": {"forget_trainer": {"learning_rate": 1.0e-5}}},
            "no_forget": {"peft": "none", "allo": {"forget": False, "learn_ratio": 10}},
            "top10": {"peft": "none", "allo": {"forget": False, "learn_ratio": 10, "token_weights": False,
                                               "top_eps": 1.0}},
            "glob": {"peft": "none", "allo": {"forget_ratio": 5, "learn_ratio": 10, "block": "global"}}}
    claims = claims_of(_params({"dpo_full": {"peft": "none"}}, align={"allo_variants": allo}))
    rows = {(c.a, c.b, c.direction) for c in claims if c.paper == "ALLO"}
    # top10 is the masked plain-DPO baseline and glob an extension (a block), not ablations of ALLO.
    assert rows == {("allo", "dpo_full", +1), ("no_mask", "allo", -1), ("no_forget", "allo", -1)}


def test_verdicts_by_hand(tmp_path):
    root = tmp_path / "evaluate"
    write_jsonl(root / "sft" / "generations.jsonl", _gens(lambda i: 5.0))
    # Full DPO: fluency +0.1 * (i + 1) on all 20 prompts (exact Wilcoxon p = 2 / 2^20), coherence unchanged.
    write_jsonl(root / "dpo_full" / "generations.jsonl", _gens(lambda i: 5.0 + 0.1 * (i + 1)))
    table, md = claims_table(_params(), root, tmp_path / "none", tmp_path / "none")
    t = table.set_index("Claim")
    fl, co = t.iloc[0], t.iloc[1]
    assert fl["Metric"].startswith("Fluency") and fl["Delta"] == pytest.approx(1.05)
    assert fl["p"] == pytest.approx(2 / 2**20) and fl["p (Holm)"] == pytest.approx(2 * 2 / 2**20)
    assert fl["Verdict"] == "supported" and fl["n"] == 20
    # MDE: 2.8016 * sd(0.1 * (1..20)) / sqrt(20)
    sd = pd.Series([0.1 * (i + 1) for i in range(20)]).std()
    assert fl["MDE"] == pytest.approx(2.8015852181129683 * sd / math.sqrt(20))
    assert co["Delta"] == 0.0 and co["p (Holm)"] == 1.0 and co["Verdict"].startswith("inconclusive")
    assert "| **supported** |" in md and "2 measured" in md

    # The opposite sign of a claim is a contradiction; a lower coherence supports the tax.
    write_jsonl(root / "dpo_full" / "generations.jsonl",
                _gens(lambda i: 5.0 - 0.1 * (i + 1), coherence=lambda i: 7.0 - 0.1 * (i + 1)))
    t = claims_table(_params(), root, tmp_path / "none", tmp_path / "none")[0]
    assert list(t["Verdict"]) == ["contradicted", "supported"]


def test_a_missing_model_is_not_measured_and_leaves_holm_to_the_rest(tmp_path):
    root = tmp_path / "evaluate"
    write_jsonl(root / "sft" / "generations.jsonl", _gens(lambda i: 5.0))
    write_jsonl(root / "dpo_full" / "generations.jsonl", _gens(lambda i: 5.0 + 0.1 * (i + 1)))
    params = _params({"dpo_full": {"peft": "none"}, "local": {"peft": "lora", "block": "local"}})
    t = claims_table(params, root, tmp_path / "none", tmp_path / "none")[0]
    local = t[t["A"] == "local"]
    assert len(local) == 2 and set(local["Verdict"]) == {"not measured"}  # improves fluency; avoids the tax
    assert all("local/generations.jsonl" in w for w in local["Why"]) and local["Delta"].isna().all()
    assert t[t["A"] == "Full-DPO"]["p (Holm)"].iloc[0] == pytest.approx(2 * 2 / 2**20)  # 2 measured tests


def test_verdict_rules():
    assert verdict(0.5, 0.01, +1, 0.2, 0.05) == "supported"
    assert verdict(-0.5, 0.01, +1, 0.2, 0.05) == "contradicted"
    assert verdict(0.1, 0.30, +1, 0.2, 0.05) == "inconclusive (|Δ| < MDE)"
    assert verdict(0.3, 0.08, +1, 0.2, 0.05) == "inconclusive (not significant after Holm)"


def test_lte_difference_per_edit_by_hand():
    def row(system, edit, kind, score, mode="batch", sizes=(2,)):
        return {"system": system, "mode": mode, "sizes": list(sizes), "edit_id": edit, "kind": kind, "score": score}

    rows = [row("lte", "e1", "prompt", 1.0), row("lte", "e2", "prompt", 1.0), row("icl", "e1", "prompt", 0.0),
            row("icl", "e2", "prompt", 1.0), row("lte", "e1", "locality", 0.5), row("lte", "e1", "locality", 1.0),
            row("icl", "e1", "locality", 0.25), row("lte", "e3", "prompt", 0.0, sizes=(1,)),  # not at size 2
            row("icl", "e1", "prompt", 1.0, mode="sequential")]
    params = _params()
    d = lte_diff(rows, "edit_success", "batch", params)
    assert d.delta == pytest.approx(0.5) and d.n == 2  # e1: 1 - 0, e2: 1 - 1
    d = lte_diff(rows, "locality", "batch", params)
    assert d.delta == pytest.approx(0.75 - 0.25) and d.n == 1  # e1's two locality answers average 0.75
    assert lte_diff(rows, "locality", "sequential", params) is None


def test_lion_difference_by_hand(tmp_path):
    lion = tmp_path / "lion"
    write_jsonl(lion / "round_0" / "baseline" / "eval_scores.jsonl",
                [{"id": "a", "student_score": 2.0, "teacher_score": 10.0},
                 {"id": "b", "student_score": 4.0, "teacher_score": 10.0}])
    write_jsonl(lion / "round_1" / "discrimination" / "eval_scores.jsonl",
                [{"id": "a", "student_score": 9.0, "teacher_score": 10.0},
                 {"id": "b", "student_score": 9.0, "teacher_score": 10.0}])
    write_jsonl(lion / "round_2" / "discrimination" / "eval_scores.jsonl",
                [{"id": "a", "student_score": 4.0, "teacher_score": 10.0},
                 {"id": "b", "student_score": 8.0, "teacher_score": 10.0}])
    d = lion_diff(lion, _params())
    # last round (2) vs round 0: 100 * (2, 4) / 10 -> (20, 40) points; mean 30
    assert d.delta == pytest.approx(30.0) and d.n == 2 and d.test == "wilcoxon"
    (lion / "round_2" / "discrimination" / "eval_scores.jsonl").unlink()
    (lion / "round_1" / "discrimination" / "eval_scores.jsonl").unlink()
    assert lion_diff(lion, _params()) is None


def test_builder_writes_the_table_and_obeys_its_switch(tmp_path):
    root = tmp_path / "evaluate"
    write_jsonl(root / "sft" / "generations.jsonl", _gens(lambda i: 5.0))
    write_jsonl(root / "dpo_full" / "generations.jsonl", _gens(lambda i: 5.0 + 0.1 * (i + 1)))
    out = tmp_path / "report"
    out.mkdir()
    table = build_claims(Context(_params(), out, {}, eval_dir=root, synth_dir=tmp_path / "none"))
    assert table.produced and table.files == ["claims.md", "claims.csv"]
    csv = pd.read_csv(out / "claims.csv")
    assert list(csv["Verdict"]) == ["supported", "inconclusive (not significant after Holm)"]
    assert (out / "claims.md").read_text().startswith("# Claims of the papers")
    off = _params(report={"claims": False})
    assert not build_claims(Context(off, out, {}, eval_dir=root)).produced
