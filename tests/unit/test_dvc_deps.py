"""dvc.yaml's code deps cannot go stale: every project module a stage runs is covered by one of its deps.

A stage runs ``flows/<stage>.py`` and, through ``flows._common.main``, ``alignpipe.stages.<stage>``; whatever they
import, directly or through other modules, at module level or lazily, is code that can change the stage's outputs,
so a change to it must make DVC rerun the stage. ``alignpipe_ops`` (lock repairs, network audit, run records) is
left out on purpose: it never touches what a stage writes, and listing it would rerun every stage for a change to
crash recovery. The check reads the source (AST); nothing is imported.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.unit.test_architecture import EDGES, MODULES, REPO

FLOW_MODULES = {f"flows.{p.stem}": p for p in (REPO / "flows").glob("*.py")}


def _flow_imports() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Per flow module: the project modules it imports at module level, and those it imports inside functions."""
    import ast

    top: dict[str, set[str]] = {}
    lazy: dict[str, set[str]] = {}
    for name, path in FLOW_MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        at_top = {id(n) for n in tree.body}
        for kind, nodes in (("top", [n for n in ast.walk(tree) if id(n) in at_top]),
                            ("lazy", [n for n in ast.walk(tree) if id(n) not in at_top])):
            targets: set[str] = set()
            for node in nodes:
                if isinstance(node, ast.ImportFrom) and node.module:
                    targets |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
                elif isinstance(node, ast.Import):
                    targets |= {a.name for a in node.names}
            (top if kind == "top" else lazy)[name] = {t for t in targets if t in MODULES or t in FLOW_MODULES}
    return top, lazy


FLOW_TOP, FLOW_LAZY = _flow_imports()
GRAPH: dict[str, set[str]] = {}
for src, dst, *_ in EDGES:
    GRAPH.setdefault(src, set()).add(dst)
# A flow's lazy imports are left out: flows._common imports the fan-out task only for a stage whose run() takes
# `fan_out`, and such a stage imports alignpipe.llm itself (test_common_imports_lazily_only_what_fan_out_stages_run).
for flow, targets in FLOW_TOP.items():
    GRAPH[flow] = targets


def _file(module: str) -> Path:
    return FLOW_MODULES[module] if module in FLOW_MODULES else MODULES[module]


def files_of(modules: set[str]) -> set[str]:
    """The repo-relative paths of ``modules``."""
    return {_file(m).relative_to(REPO).as_posix() for m in modules}


def closure(roots: list[str]) -> set[str]:
    """Every project module the roots import, transitively, with the packages (``__init__``) on their way."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        module = todo.pop()
        if module in seen or module.startswith("alignpipe_ops"):
            continue
        if module not in MODULES and module not in FLOW_MODULES:
            continue
        seen.add(module)
        parts = module.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        todo += sorted(GRAPH.get(module, ()))
    return seen


def stage_roots(cmd: str) -> list[str]:
    """What a stage command runs: its flow module and the stage module ``flows._common.main`` imports."""
    flow = re.match(r"python -m (flows\.\w+)", cmd).group(1)
    return [flow, f"alignpipe.stages.{flow.split('.')[1]}"]


def _stages() -> list[tuple[str, dict]]:
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    return [(name, body.get("do", body)) for name, body in spec.items()]


@pytest.mark.parametrize(("stage", "body"), _stages(), ids=[name for name, _ in _stages()])
def test_code_deps_cover_what_the_stage_runs(stage, body):
    roots = stage_roots(body["cmd"])
    deps = [d if isinstance(d, str) else next(iter(d)) for d in body.get("deps", [])]
    code_deps = [d.rstrip("/") for d in deps if d.startswith(("src/", "flows/"))]
    ran = files_of(closure(roots))
    missing = sorted(f for f in ran if not any(f == d or f.startswith(d + "/") for d in code_deps))
    assert not missing, (f"dvc.yaml stage '{stage}' runs code that is not among its deps: {missing} "
                         "(`python scripts/code_deps.py --write` rewrites them)")
    stale = [d for d in code_deps if not (REPO / d).exists()]
    assert not stale, f"dvc.yaml stage '{stage}' lists deps that do not exist: {stale}"


def test_common_imports_lazily_only_what_fan_out_stages_run():
    lazy = FLOW_LAZY["flows._common"]
    fan_out_stages = [m for m, p in MODULES.items() if m.startswith("alignpipe.stages.")
                      and re.search(r"def run\([^)]*\bfan_out\b", p.read_text(encoding="utf-8"), re.S)]
    assert fan_out_stages, "no stage takes fan_out: the check below would pass vacuously"
    for stage in fan_out_stages:
        assert lazy <= closure([stage]), f"{stage} does not itself import {sorted(lazy - closure([stage]))}"
