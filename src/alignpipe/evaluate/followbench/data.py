"""Load and validate the official FollowBench data (``YJiangcm/FollowBench``, English ``data/``).

Usage::

    records = load_followbench("../shared/data/followbench")             # a local dir of the six files
    records = load_followbench("YuxinJiang/FollowBench", revision=...)   # the hub dataset (paper scale)

Each of the six files ``{content,situation,style,format,example,mixed}_constraints.json`` is a JSON array of
``{example_id, category, source, level, instruction, target}`` (``example`` also has ``answer``). Level 0 is the
original instruction and is not scored; levels 1-5 each add one constraint. ``example`` has no level 0: its
instructions are few-shot prompts whose ``target`` is a template of the expected answer.

Records are returned in file order with ``id`` (``<category>-<example_id>-L<level>``) and ``group_id``
(``<category>-<example_id>``) added, the keys the project's metrics use, and ``category`` set to the file's
category: in ``mixed_constraints.json`` a record's own ``category`` lists the kinds of its constraints
(``"format, content"`` at level 2); it is kept as ``constraint_kinds``. Validation names the file and the array
index of the first bad record, so a broken copy fails before any generation.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from alignpipe.config import CATEGORIES
from alignpipe.utils.io import DataError, read_json

REQUIRED = {"example_id": int, "category": str, "source": str, "level": int, "instruction": str, "target": str}
HUB_SUBDIR = "data_en"  # where the hub dataset keeps the English files
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")  # as models.load's


def file_name(category: str) -> str:
    return f"{category}_constraints.json"


def validate(records: Sequence[dict[str, Any]], category: str, where: str) -> list[dict[str, Any]]:
    """Check one category's records; return them with ``id`` and ``group_id`` added.

    Checks: every field present with its type; ``category`` equal to the file's; levels 0-5 (1-5 for
    ``example``); non-empty instructions at scored levels; ``answer`` present for ``example``; each group (same
    ``example_id``) has its levels in order 1..5 (0..5 outside ``example``) with no gap or repeat, because the
    judge prompt is built from a group's evolution path.

    Raises:
        DataError: naming ``where`` (the file) and the index of the offending record.
    """
    out = []
    first_level = 1 if category == "example" else 0
    for i, rec in enumerate(records):
        at = f"{where}[{i}]"
        if not isinstance(rec, dict):
            raise DataError(f"{at}: expected an object, got {type(rec).__name__}")
        for key, typ in REQUIRED.items():
            if key not in rec:
                raise DataError(f"{at}: missing field '{key}'")
            if not isinstance(rec[key], typ) or isinstance(rec[key], bool):
                raise DataError(f"{at}: field '{key}' = {rec[key]!r} is not a {typ.__name__}")
        if not _category_ok(rec["category"], category, rec["level"]):
            raise DataError(f"{at}: category '{rec['category']}' in the file of category '{category}'")
        if not first_level <= rec["level"] <= 5:
            raise DataError(f"{at}: level {rec['level']} outside {first_level}-5")
        if rec["level"] > 0 and not rec["instruction"].strip():
            raise DataError(f"{at}: empty instruction at level {rec['level']}")
        if category == "example" and not isinstance(rec.get("answer"), str):
            raise DataError(f"{at}: an example-constraint record needs a string 'answer'")
        prev = out[-1] if out else None
        if prev is not None and prev["example_id"] == rec["example_id"]:
            expected = prev["level"] + 1
        else:
            expected = first_level
            if prev is not None and prev["level"] != 5:
                raise DataError(f"{where}[{i - 1}]: group {prev['example_id']} ends at level {prev['level']}, not 5")
            if any(r["example_id"] == rec["example_id"] for r in out):
                raise DataError(f"{at}: group {rec['example_id']} appears again after other groups")
        if rec["level"] != expected:
            raise DataError(
                f"{at}: group {rec['example_id']} has level {rec['level']} where level {expected} was expected"
            )
        gid = f"{category}-{rec['example_id']}"
        # The file's category names the group (metrics, judge prompt); a mixed record's own 'category' lists the
        # kinds of its constraints ("format, content, ...") and is kept as 'constraint_kinds'.
        out.append(
            {**rec, "category": category, "constraint_kinds": rec["category"], "id": f"{gid}-L{rec['level']}",
             "group_id": gid}
        )
    if not out:
        raise DataError(f"{where}: no record")
    if out[-1]["level"] != 5:
        raise DataError(f"{where}[{len(out) - 1}]: group {out[-1]['example_id']} ends at level {out[-1]['level']}")
    return out


def _category_ok(value: str, category: str, level: int) -> bool:
    """A record's 'category' is its file's; in ``mixed`` it lists its L constraint kinds after level 0."""
    if category != "mixed" or level == 0:
        return value == category
    kinds = [k.strip() for k in value.split(",")]
    return len(kinds) == level and all(k in CATEGORIES for k in kinds)


def _read_local(directory: Path, category: str) -> tuple[list[Any], str]:
    path = directory / file_name(category)
    if not path.is_file():
        raise DataError(f"{path}: FollowBench file not found (expected the six *_constraints.json in {directory})")
    data = read_json(path)  # names the file and line of bad JSON, non-UTF-8 text, an empty file
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON array of records, got {type(data).__name__}")
    return data, str(path)


def _read_hub(dataset_id: str, category: str, revision: str | None,
              key: str = "evaluate.followbench.source") -> tuple[list[Any], str]:
    # One file per call: the six files differ in columns (only example has 'answer'), so they cannot be one table.
    from datasets import load_dataset

    data_file = f"{HUB_SUBDIR}/{file_name(category)}"
    try:
        ds = load_dataset(dataset_id, data_files=data_file, split="train", revision=revision)
    except (OSError, ValueError) as err:  # offline / unknown id (ConnectionError, DatasetNotFoundError), bad file
        cause = " ".join(f"{type(err).__name__}: {err}".split())
        raise DataError(f"{key} = {dataset_id!r}: no such local directory, and hub dataset {dataset_id}:{data_file} "
                        f"could not be loaded ({cause}); give a local directory holding the six *_constraints.json "
                        "files, or a hub dataset id (org/name) that is in the cache or reachable") from None
    return [dict(row) for row in ds], f"{dataset_id}:{data_file}"


def looks_like_hub_id(source: str) -> bool:
    """``org/name`` that is not an explicit filesystem path (``./x``, ``/abs``, ``~/x``)."""
    return bool(_HUB_ID.match(source)) and not source.startswith((".", "/", "~"))


def check_source(source: str | Path, key: str = "evaluate.followbench.source") -> bool:
    """Whether ``source`` is a local directory (True) or a hub dataset id (False).

    Raises:
        DataError: ``source`` is a file (a directory is expected), or a path that does not exist and cannot be a
            hub id (absolute, ``./``/``~``-relative, or not of the form ``org/name``); the message names ``key``.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        return True
    if path.exists():
        raise DataError(f"{key} = {str(source)!r}: a file, but a directory is expected (the one holding the six "
                        "*_constraints.json files, e.g. FollowBench's data_en/), or a hub dataset id (org/name)")
    if not looks_like_hub_id(str(source)):
        parent = next((p for p in path.parents if p.is_dir()), None)
        near = ""
        if parent is not None:
            close = difflib.get_close_matches(path.name, [c.name for c in parent.iterdir() if c.is_dir()], n=1)
            near = f" (did you mean {str(parent / close[0])!r}?)" if close else ""
        raise DataError(f"{key} = {str(source)!r}: directory not found{near}; expected a local directory holding the "
                        "six *_constraints.json files, or a hub dataset id (org/name)")
    return False


def load_followbench(
    source: str | Path, categories: Iterable[str] = CATEGORIES, revision: str | None = None,
    key: str = "evaluate.followbench.source",
) -> list[dict[str, Any]]:
    """All records of the given categories, validated, in category then file order.

    Args:
        source: a local directory holding the six files, or a hub dataset id (``YuxinJiang/FollowBench``).
        categories: the constraint categories to read.
        revision: hub revision (ignored for a local directory).
        key: the params key that gave ``source``, for messages.

    Raises:
        DataError: a source that is a file, a missing directory, a hub dataset that cannot be loaded (each naming
            ``key``), a missing/malformed file or record (named with its index).
    """
    local = check_source(source, key)
    path = Path(source).expanduser()
    records: list[dict[str, Any]] = []
    for category in categories:
        if category not in CATEGORIES:
            raise DataError(f"unknown FollowBench category '{category}'; allowed: {list(CATEGORIES)}")
        data, where = _read_local(path, category) if local else _read_hub(str(source), category, revision, key)
        records.extend(validate(data, category, where))
    return records


def evolution_paths(records: Sequence[dict[str, Any]]) -> dict[str, list[str]]:
    """``id`` -> the instructions from the group's first record up to and including that record.

    For level L outside ``example`` this is ``[level 0, level 1, ..., level L]`` (L + 1 instructions), the path the
    official judge prompt shows. ``example`` records start at level 1, so their path has L instructions (they are
    scored by rules and never judged).
    """
    paths: dict[str, list[str]] = {}
    current: list[str] = []
    group = None
    for rec in records:
        if rec["group_id"] != group:
            group, current = rec["group_id"], []
        current = [*current, rec["instruction"]]
        paths[rec["id"]] = current
    return paths


def select_groups(records: Sequence[dict[str, Any]], max_groups: int | None, rng: Any) -> list[dict[str, Any]]:
    """Keep at most ``max_groups`` groups per category, drawn without replacement by ``rng`` (a numpy Generator).

    Groups keep their file order; ``None`` keeps everything.
    """
    if max_groups is None:
        return list(records)
    keep: set[str] = set()
    for category in dict.fromkeys(r["category"] for r in records):
        groups = list(dict.fromkeys(r["group_id"] for r in records if r["category"] == category))
        if len(groups) > max_groups:
            groups = [groups[i] for i in sorted(rng.choice(len(groups), size=max_groups, replace=False))]
        keep.update(groups)
    return [r for r in records if r["group_id"] in keep]
