"""The report's tables as a registry of builders; ``README.md`` gathers whatever they produced.

A builder takes the :class:`Context` (params, input dirs, the report's output dir), writes its files into
``ctx.out`` and returns a :class:`Table`: its markdown, the files it wrote, and its provenance (models, data,
judge, sample size), or ``produced=False`` with the reason (a stage turned off, an input absent) — a table is
never invented. A new table (ALLO, BMC, ...) is one function decorated with ``@register("key", "Title")``;
:func:`assemble` then puts it in the README in registration order.

    ctx = Context(params, out=tmp, eval_dir=..., metrics=load_metrics(...))
    tables = build_all(ctx)                 # every registered builder, in order
    text = assemble(tables, header)         # README.md: index + one section per table (or "not produced")
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignpipe.config import Params


@dataclass
class Context:
    """What a builder may read: params, the evaluated models' metrics, the stages' output dirs, where to write."""

    params: Params
    out: Path
    metrics: Mapping[str, Mapping[str, Any]]  # row label -> evaluate metrics.json (+ "_config", "_name")
    eval_dir: Path = Path("data/evaluate")
    edit_eval_dir: Path = Path("data/edit_eval")
    synth_dir: Path = Path("data/synthesize")
    world_dir: Path = Path("data/world")
    align_dir: Path = Path("data/align")
    mix_dir: Path = Path("data/sft_mix")


@dataclass
class Table:
    """One report table: markdown + files written + provenance, or why it was not produced."""

    key: str
    title: str
    produced: bool
    markdown: str = ""
    files: list[str] = field(default_factory=list)  # relative to the report dir (CSV, PNG, md)
    models: str = "–"
    data: str = "–"
    judge: str = "–"
    sample: str = "–"
    reason: str = ""  # why not produced


Builder = Callable[[Context], Table]
BUILDERS: dict[str, tuple[str, Builder]] = {}


def register(key: str, title: str) -> Callable[[Builder], Builder]:
    """Add a table builder (``key`` names it in the README anchors; ``title`` heads its section)."""

    def deco(fn: Builder) -> Builder:
        if key in BUILDERS:
            raise ValueError(f"report table '{key}' registered twice")
        BUILDERS[key] = (title, fn)
        return fn

    return deco


def not_produced(key: str, reason: str) -> Table:
    """The registered table ``key``, not produced because of ``reason``."""
    return Table(key, BUILDERS[key][0], produced=False, reason=reason)


def produced(key: str, markdown: str, files: list[str], models: str, data: str, judge: str, sample: str) -> Table:
    """The registered table ``key`` (its title from the registry), produced, with its provenance."""
    return Table(key, BUILDERS[key][0], True, markdown, files, models, data, judge, sample)


def build_all(ctx: Context) -> list[Table]:
    """Run every registered builder in registration order."""
    return [fn(ctx) for fn in (b for _, b in BUILDERS.values())]


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def assemble(tables: list[Table], header: str) -> str:
    """README.md: ``header``, an index of every table (produced or not), then each produced table with its
    provenance and links to its files."""
    lines = [header.rstrip("\n"), "", "## Tables", "",
             "| Table | Status | Models | Data | Judge | Sample size | Files |", "|---|---|---|---|---|---|---|"]
    for t in tables:
        status = "produced" if t.produced else f"not produced: {t.reason}"
        files = ", ".join(f"[{f}]({f})" for f in t.files) or "–"
        lines.append(f"| [{t.title}](#{t.key}) | {_cell(status)} | {_cell(t.models)} | {_cell(t.data)} | "
                     f"{_cell(t.judge)} | {_cell(t.sample)} | {files} |")
    for t in tables:
        lines += ["", f'<a id="{t.key}"></a>', f"### {t.title}", ""]
        if not t.produced:
            lines.append(f"Not produced: {t.reason}.")
            continue
        lines += [f"Models: {t.models}. Data: {t.data}. Judge: {t.judge}. Sample size: {t.sample}.", ""]
        lines.append(t.markdown.rstrip("\n"))
        plots = [f for f in t.files if f.endswith(".png")]
        lines += [""] + [f"![{p}]({p})" for p in plots] if plots else []
        csvs = [f for f in t.files if f.endswith(".csv")]
        if csvs:
            lines += ["", "CSV: " + ", ".join(f"[{c}]({c})" for c in csvs) + "."]
    return "\n".join(lines) + "\n"


# ---- helpers the builders share -------------------------------------------------------------------------------
def models_of(metrics: Mapping[str, Mapping[str, Any]]) -> str:
    return ", ".join(f"{label} (`{m.get('_config', {}).get('model_dir', m.get('_name', '?'))}`)"
                     for label, m in metrics.items())


def judges_of(metrics: Mapping[str, Mapping[str, Any]]) -> str:
    return "; ".join(sorted({str(m.get("_config", {}).get("judge", "unknown")) for m in metrics.values()}))


def data_of(metrics: Mapping[str, Mapping[str, Any]]) -> str:
    found = set()
    for m in metrics.values():
        used = m.get("_config", {})
        if used.get("benchmark") == "followbench":
            found.add(f"official FollowBench data `{used['data']['source']}`")
        else:
            found.add(f"`{used['world_dir']}/eval.jsonl`" if "world_dir" in used else "unknown")
    return ", ".join(sorted(found))


def sizes_of(metrics: Mapping[str, Mapping[str, Any]]) -> str:
    def one(label: str, m: Mapping[str, Any]) -> str:
        text = f"{label}: {m.get('n_groups', '?')} groups / {m.get('n_instructions', '?')} instructions"
        bad = (m.get("unparseable") or {}).get("n") if isinstance(m.get("unparseable"), dict) else None
        if bad:
            text += f" ({bad} unparseable judge outputs, not scored)"
        if m.get("judge_unparseable"):
            text += f" ({m['judge_unparseable']} unparseable judge scores, not averaged)"
        return text

    return "; ".join(one(label, m) for label, m in metrics.items())
