"""The code deps of each dvc.yaml stage, from the imports of what the stage runs.

    python scripts/code_deps.py            # print, per stage, the code deps its imports call for
    python scripts/code_deps.py --write    # rewrite the src/ and flows/ deps in dvc.yaml (data deps untouched)

A stage runs ``flows/<stage>.py`` and ``alignpipe.stages.<stage>``; every project module they import, transitively,
module-level or lazily, is code that can change its outputs (``alignpipe_ops`` excepted: it never touches outputs).
A package most of whose modules are run is listed as its directory, otherwise its files are. tests/unit/test_dvc_deps.py
fails when dvc.yaml lacks one of them.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.unit.test_dvc_deps import closure, files_of, stage_roots  # noqa: E402  (the repo root must be on the path first)


def cover(files: set[str], share: float = 0.5) -> list[str]:
    """Few paths that cover ``files``: a package directory where at least ``share`` of the .py files below it are in
    ``files`` (listing a handful of files of a package the stage mostly runs would only make dvc.yaml hard to read;
    the price is a rerun when an unused sibling changes), otherwise its files one by one."""
    out: list[str] = []

    def walk(directory: Path) -> None:
        rel = directory.relative_to(REPO).as_posix()
        below = {p.relative_to(REPO).as_posix() for p in directory.rglob("*.py")}
        if below and len(below & files) >= share * len(below) and rel not in ("src", "src/alignpipe", "flows"):
            out.append(rel)
            return
        out.extend(sorted(f for f in files if Path(f).parent.as_posix() == rel))
        for child in sorted(p for p in directory.iterdir() if p.is_dir() and p.name != "__pycache__"):
            if any(f.startswith(child.relative_to(REPO).as_posix() + "/") for f in files):
                walk(child)

    for top in ("flows", "src"):
        walk(REPO / top)
    return out


def code_deps(cmd: str) -> list[str]:
    return cover(files_of(closure(stage_roots(cmd))))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="rewrite the code deps in dvc.yaml")
    args = parser.parse_args(argv)
    from ruamel.yaml import YAML  # DVC's own YAML library: keeps comments and layout

    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    path = REPO / "dvc.yaml"
    doc = yaml.load(path.read_text(encoding="utf-8"))
    for name, body in doc["stages"].items():
        body = body.get("do", body)
        wanted = code_deps(body["cmd"])
        print(f"{name}: {' '.join(wanted)}")
        if args.write:
            data = [d for d in body["deps"] if not (isinstance(d, str) and re.match(r"(src|flows)/", d))]
            body["deps"].clear()
            body["deps"].extend([*wanted, *data])
    if args.write:
        with path.open("w", encoding="utf-8") as fh:
            yaml.dump(doc, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
