"""The dependency direction of docs/architecture.md, checked on the source (AST, nothing imported).

Layers, top to bottom; a module imports only from its own layer or below, and never in a cycle:

    alignpipe.stages, alignpipe.profile       one module per DVC stage (+ the profile CLI)
    alignpipe.methods                         the papers' methods (hierarchical, bmc, allo, lion, webr, lte)
    alignpipe.train, .evaluate, .report       training on TRL, evaluation, tables and plots
    alignpipe.models, alignpipe.llm           model load / generate / pretrain; the LLM roles and their backends
    alignpipe.world, alignpipe.prefs          the built-in world; preference scoring and pairing
    alignpipe.utils                           atomic I/O, seeding, caches, run events
    alignpipe.config                          typed params

``alignpipe_ops`` (lock repairs, network audit, run records) sits beside the library: flows, the Makefile and the
tests use it; the library never imports it. A stage never imports another stage. A project import inside a function
is allowed only with a ``# Lazy: <why>`` comment on its line or right above it (a heavy or optional dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"
LAYERS = [
    ("alignpipe.stages", "alignpipe.profile"),
    ("alignpipe.methods",),
    ("alignpipe.train", "alignpipe.evaluate", "alignpipe.report"),
    ("alignpipe.models", "alignpipe.llm"),
    ("alignpipe.world", "alignpipe.prefs"),
    ("alignpipe.utils",),
    ("alignpipe.config",),
]
PROJECT = ("alignpipe", "alignpipe_ops")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(SRC.rglob("*.py"))}


MODULES = _modules()


def _imports(path: Path, name: str) -> list[tuple[str, int, bool, str]]:
    """(imported project module, line, inside a function, source line) for every project import in ``path``."""
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    tree = ast.parse(source)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            targets: list[str] = []
            if isinstance(child, ast.Import):
                targets = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    up = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join(up + ([child.module] if child.module else []))
                # `from pkg import mod` imports the module pkg.mod when it exists
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in child.names]
            for target in targets:
                if target.split(".")[0] in PROJECT:
                    # the line itself and the comment lines right above it (where the `# lazy:` reason may stand)
                    above = []
                    for k in range(child.lineno - 2, -1, -1):
                        if not lines[k].strip().startswith(("#", "from ", "import ")):
                            break
                        above.append(lines[k])
                    out.append((target, child.lineno, in_function, "\n".join([*above[::-1], lines[child.lineno - 1]])))
            visit(child, inside)

    visit(tree, False)
    return out


EDGES = sorted({(name, *imp) for name, path in MODULES.items() for imp in _imports(path, name)})


def _layer(module: str) -> int | None:
    for rank, group in enumerate(LAYERS):
        if any(module == g or module.startswith(g + ".") for g in group):
            return rank
    return None


def _package(module: str) -> str:
    """The unit cycles are checked between: alignpipe.<pkg>[.<subpkg>] (e.g. alignpipe.methods.allo)."""
    parts = module.split(".")
    if parts[0] != "alignpipe" or len(parts) < 2:
        return parts[0]
    if parts[1] in ("methods", "stages") and len(parts) > 2:
        return ".".join(parts[:3])
    return ".".join(parts[:2])


def test_every_library_module_has_a_layer():
    missing = [m for m in MODULES if m.startswith("alignpipe.") and _layer(m) is None]
    assert not missing, f"modules outside every layer of docs/architecture.md: {missing}"


def test_imports_point_down_the_layers():
    upward = [f"{src} -> {dst} (line {line}: {text.splitlines()[-1].strip()})" for src, dst, line, _, text in EDGES
              if src.startswith("alignpipe.") and _layer(dst) is not None and _layer(src) is not None
              and _layer(dst) < _layer(src)]
    assert not upward, "imports against the layer order:\n" + "\n".join(upward)


def test_the_library_never_imports_the_operations_package():
    bad = [f"{src} line {line}" for src, dst, line, _, _ in EDGES
           if src.startswith("alignpipe.") and dst.startswith("alignpipe_ops")]
    assert not bad, f"alignpipe imports alignpipe_ops: {bad}"


def test_a_stage_never_imports_another_stage():
    bad = [f"{src} -> {dst}" for src, dst, *_ in EDGES
           if src.startswith("alignpipe.stages.") and dst.startswith("alignpipe.stages.") and dst != src]
    assert not bad, f"stages importing each other: {bad}"


def test_no_package_cycles():
    graph: dict[str, set[str]] = {}
    for src, dst, *_ in EDGES:
        a, b = _package(src), _package(dst)
        if a != b:
            graph.setdefault(a, set()).add(b)
    # Tarjan's strongly connected components
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in list(graph):
        if v not in index:
            strong(v)
    assert not cycles, f"package cycles: {cycles}"


def test_in_function_project_imports_say_why():
    silent = [f"{src} line {line}: {text.splitlines()[-1].strip()}" for src, dst, line, in_function, text in EDGES
              if in_function and "# lazy:" not in text.lower()]
    assert not silent, ("project imports inside functions without a `# lazy: <why>` comment "
                        "(move them to the module top):\n" + "\n".join(silent))


@pytest.mark.parametrize("flow", sorted(p.name for p in (REPO / "flows").glob("*.py")
                                        if p.name not in ("__init__.py", "_common.py", "server.py")))
def test_flows_are_thin(flow):
    """A flow file is a docstring, its CLI arguments and one call of flows._common.main (the stage's run())."""
    tree = ast.parse((REPO / "flows" / flow).read_text(encoding="utf-8"))
    defs = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
    assert set(defs) <= {"_args"}, f"flows/{flow} defines {defs}: stage logic belongs in alignpipe.stages"
    assert "main(" in ast.unparse(tree), f"flows/{flow} does not call flows._common.main"
