"""The report stage from fake metrics.json files: tables, CSV, plot, README, rows from the variants, errors."""

from __future__ import annotations

import base64
import html
import io
import json
import re
import pandas as pd
import pytest
from PIL import Image

from alignpipe.config import Params, validate_params
from alignpipe.stages import report as stage
from alignpipe.utils.io import DataError, write_json
from alignpipe_ops.browser import browse

LEVEL_HSR = {"hsr_l1": 0.75, "hsr_l2": 0.75, "hsr_l3": 0.5, "hsr_l4": 0.75, "hsr_l5": 0.5}
LEVEL_SSR = {"ssr_l1": 0.75, "ssr_l2": 0.875, "ssr_l3": 0.666667, "ssr_l4": 0.8125, "ssr_l5": 0.7}
SFT = {
    **LEVEL_HSR,
    **LEVEL_SSR,
    **{f"{k}_lo": v - 0.25 for k, v in LEVEL_HSR.items()},
    **{f"{k}_hi": min(v + 0.25, 1.0) for k, v in LEVEL_HSR.items()},
    "hsr_avg": 0.65, "hsr_avg_lo": 0.55, "hsr_avg_hi": 0.75,
    "ssr_avg": 0.760833, "ssr_avg_lo": 0.7, "ssr_avg_hi": 0.8,
    "csl": 2.25, "csl_lo": 1.5, "csl_hi": 3.0,
    "fluency": 7.125, "fluency_lo": 6.5, "fluency_hi": 7.75,
    "factuality": 5.5, "factuality_lo": 5.0, "factuality_hi": 6.0,
    "coherence": 6.0, "coherence_lo": 5.25, "coherence_hi": 6.5,
    "n_groups": 12, "n_instructions": 60,
    "per_category": {"content": {"hsr_avg": 0.5}},
}  # fmt: skip
# Evaluated without bootstrap: no interval keys.
BASE = {
    **{f"hsr_l{i}": 0.1 * i for i in range(1, 6)},
    **{f"ssr_l{i}": 0.2 for i in range(1, 6)},
    "hsr_avg": 0.3, "ssr_avg": 0.2, "csl": 0.5, "fluency": 4.0, "factuality": 3.0, "coherence": 2.0,
    "n_groups": 12, "n_instructions": 60,
}  # fmt: skip


@pytest.fixture
def eval_dir(tmp_path):
    root = tmp_path / "evaluate"
    write_json(root / "sft" / "metrics.json", SFT)
    write_json(
        root / "sft" / "config.json",
        {"model_dir": "data/sft/model", "world_dir": "data/world", "eval_sha256": "ab" * 32, "judge": "RuleJudge"},
    )
    write_json(root / "base" / "metrics.json", BASE)
    return root


def _params(labels: dict[str, str], variants: dict | None = None) -> Params:
    return validate_params({"report": {"labels": labels}, "align": {"variants": variants or {}}})


def test_report_tables_and_files(eval_dir, tmp_path):
    out = tmp_path / "report"
    table = stage.run(_params({"base": "Base model", "sft": "SFT"}), eval_dir=eval_dir, out_dir=out,
                      synth_dir=tmp_path / "no_synthesize")
    assert sorted(p.name for p in out.iterdir()) == sorted(stage.FILES)
    assert list(table) == ["Base model", "SFT"]

    md = (out / "followbench.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| Model"))
    cols = [c.strip() for c in header.strip("|").split("|")]
    assert cols == ["Model", *(f"HSR L{i}" for i in range(1, 6)), "HSR Avg", *(f"SSR L{i}" for i in range(1, 6)),
                    "SSR Avg", "CSL", "Fluency", "Factuality", "Coherence",
                    "Δ HSR Avg vs SFT [95% CI]", "p HSR vs SFT", "Δ Fluency vs SFT (p)", "Δ Factuality vs SFT (p)",
                    "Δ Coherence vs SFT (p)"]  # fmt: skip
    rows = [line for line in md.splitlines() if line.startswith("| ") and not line.startswith("| Model")]
    assert [r.split("|")[1].strip() for r in rows] == ["Base model", "SFT"]
    sft = [c.strip() for c in rows[1].strip("|").split("|")]
    assert sft[1:7] == ["75.0", "75.0", "50.0", "75.0", "50.0", "65.0 [55.0, 75.0]"]
    assert sft[12] == "76.1 [70.0, 80.0]" and sft[13] == "2.25 [1.50, 3.00]" and sft[14] == "7.12 [6.50, 7.75]"
    base = [c.strip() for c in rows[0].strip("|").split("|")]
    assert base[6] == "30.0" and base[13] == "0.50" and base[16] == "2.00"  # no interval -> value only
    assert "12 groups / 60 instructions" in md

    csv = pd.read_csv(io.StringIO((out / "followbench.csv").read_text()), index_col="Model")
    assert list(csv.index) == ["Base model", "SFT"]
    assert csv.loc["SFT", "HSR L3"] == 50.0 and csv.loc["SFT", "SSR Avg hi"] == 80.0
    assert csv.loc["SFT", "CSL"] == 2.25 and csv.loc["Base model", "Coherence"] == 2.0
    assert pd.isna(csv.loc["Base model", "HSR Avg lo"]) and csv.loc["SFT", "Groups"] == 12

    png = (out / "hsr_by_level.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000
    summary = json.loads((tmp_path / "summary.json").read_text())  # beside the report dir, for `dvc exp show`
    assert summary == {"hsr_avg": {"Base model": 30.0, "SFT": 65.0}, "fluency": {"Base model": 4.0, "SFT": 7.125},
                       "factuality": {"Base model": 3.0, "SFT": 5.5}, "coherence": {"Base model": 2.0, "SFT": 6.0}}

    readme = (out / "README.md").read_text()
    assert "not** the numbers published" in readme
    assert (
        "| SFT | `sft` | `data/sft/model` | `data/world/eval.jsonl` (sha256 abababababab) | RuleJudge | 12 | 60 |"
        in readme
    )
    assert "| Base model | `base` | `unknown`" in readme

    # Same metrics -> same bytes (the PNG carries no timestamp).
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    stage.run(_params({"base": "Base model", "sft": "SFT"}), eval_dir=eval_dir, out_dir=out,
                      synth_dir=tmp_path / "no_synthesize")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_rows_are_base_sft_then_the_variants_in_params_order(eval_dir, tmp_path):
    """A new variant is one entry in align.variants: it becomes a row (labelled by its name unless report.labels
    names it), with no list to edit in report:."""
    write_json(eval_dir / "zeta" / "metrics.json", BASE)
    write_json(eval_dir / "alpha" / "metrics.json", SFT)
    params = _params({"alpha": "Alpha-DPO"}, {"zeta": {"peft": "lora"}, "alpha": {"peft": "none"}})
    table = stage.run(params, eval_dir=eval_dir, out_dir=tmp_path / "r")
    assert list(table) == ["base", "sft", "zeta", "Alpha-DPO"]
    assert (tmp_path / "r" / "followbench.csv").read_text().splitlines()[4].startswith("Alpha-DPO,75.0000")


def test_missing_metrics_names_the_file(eval_dir, tmp_path):
    with pytest.raises(DataError, match=r"evaluate/dpo/metrics\.json not found"):
        stage.run(_params({}, {"dpo": {"peft": "none"}}), eval_dir=eval_dir, out_dir=tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_report_page_is_self_contained_and_renders_offline(eval_dir, tmp_path):
    out = tmp_path / "report"
    stage.run(_params({"base": "Base model", "sft": "SFT"}), eval_dir=eval_dir, out_dir=out,
              synth_dir=tmp_path / "no_synthesize")
    page = (out / "index.html").read_text(encoding="utf-8")
    readme = (out / "README.md").read_text(encoding="utf-8")
    for title in re.findall(r"^### (.+)$", readme, re.M):  # every section of the README, produced or not
        assert html.escape(title, quote=False) in page, title
    imgs = re.findall(r'<img\b[^>]*\bsrc="([^"]+)"', page)
    png = base64.b64encode((out / "hsr_by_level.png").read_bytes()).decode()
    assert imgs == [f"data:image/png;base64,{png}"]  # the plot itself, inline
    assert not re.search(r"<script|<link\b|@import|url\(|\bsrc=\"(?!data:)", page)

    status, got = browse(out / "index.html", tmp_path / "shot.png")
    assert status == 0 and got["loaded"] and got["external"] == [] and got["local_files"] == [], got
    assert got["title"] == "alignpipe report" and got["text_length"] > 1000
    shot = Image.open(tmp_path / "shot.png").convert("RGB")
    assert len(shot.getcolors(maxcolors=1 << 20)) > 50  # text, table rules and the plot's colours, not a blank page

    (tmp_path / "remote.html").write_text('<html><body><img src="https://example.invalid/x.png"></body></html>')
    status, got = browse(tmp_path / "remote.html")  # the check sees a remote request when a page makes one
    assert status == 1 and got["external"] == ["https://example.invalid/x.png"]


def test_hsr_by_level_small_multiples_stay_readable_at_any_row_count(tmp_path):
    from alignpipe.report.plots import hsr_by_level, panels_of

    metrics = {f"model {i}": {**LEVEL_HSR, "hsr_l3": 0.02 * i} for i in range(20)}
    groups = {"A": [f"model {i}" for i in range(12)], "B": ["model 0", "model 1"], "C": ["model 0", "model 12", "x"]}
    panels = panels_of(groups, metrics)
    # A split in two panels of at most 8 lines; B adds no model (no panel); C keeps the shared reference; the
    # models no group names in a last panel; a label without metrics ("x") nowhere
    assert {t: list(rows) for t, rows in panels.items()} == {
        "A (1/2)": [f"model {i}" for i in range(8)], "A (2/2)": [f"model {i}" for i in range(8, 12)],
        "C": ["model 0", "model 12"], "Other models": [f"model {i}" for i in range(13, 20)]}
    hsr_by_level(panels, tmp_path / "p.png")
    img = Image.open(tmp_path / "p.png")
    assert img.size[0] > 1000 and img.size[1] > 2 * 300  # two columns, two rows of panels
    one = {"only": {"model 0": metrics["model 0"]}}
    hsr_by_level(one, tmp_path / "one.png")
    assert Image.open(tmp_path / "one.png").size[0] < 700  # one panel: one column


def test_summary_counts_each_verdict_whatever_its_reason():
    from alignpipe.report.summary import summary

    claims = pd.DataFrame({"Verdict": ["supported", "inconclusive (|Δ| < MDE)", "inconclusive (not significant)",
                                       "contradicted", "not measured"]})
    out = summary(_params({}), {}, "/nonexistent", claims)
    assert out == {"claims": {"supported": 1, "contradicted": 1, "inconclusive": 2, "not_measured": 1}}
