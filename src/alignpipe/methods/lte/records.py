"""Edit records: one schema for the world's edits and KnowEdit files, with file/record-precise validation.

The schema is KnowEdit's (``YJiangcm/LTE`` ``EasyEdit/data/knowedit``), normalized so the rest of the code
never branches on the source::

    {"id": "zsre-00000", "subject": "Epaspidoceras", "prompt": "Which family does Epaspidoceras belong to?",
     "rephrase_prompt": "What family are Epaspidoceras?" | null, "target_new": "Noctuidae",
     "ground_truth": ["Aspidoceratidae"], "fact": "Which family does Epaspidoceras belong to? Noctuidae",
     "portability": {"Reasoning": [{"prompt": "...", "ground_truth": ["Owlet moths"]}], ...},
     "locality": {"Relation_Specificity": [{"prompt": "...", "ground_truth": ["genus"]}], ...}}

KnowEdit stores ``ground_truth`` as a string or a list (ZsRE: list; wiki_counterfact: string) and may omit
``rephrase_prompt``; both become lists / null here. ``fact`` is what LTE stores and retrieves: the prompt
followed by the new target (``prompt + " " + target_new``), unless the record brings its own sentence
(the world's edits do). World questions may carry ``answer``, a full sentence used as the training target.

Usage::

    edits = load_knowedit("../shared/data/knowedit/ZsRE-test-all.json")    # DataError names file + record
    rows = read_edits("data/edits/eval.jsonl")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alignpipe.utils.io import DataError, read_json, read_jsonl_numbered

SCOPES = ("portability", "locality")


def _answers(value: Any, where: str, allow_empty: bool = False) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list) and not value and allow_empty:
        return []
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: must be a non-empty string or list of strings, got {value!r}")
    out = []
    for item in value:
        if isinstance(item, list):  # some KnowEdit portability answers are lists of aliases per hop
            out.extend(x for x in item if isinstance(x, str))
        elif isinstance(item, str):
            out.append(item)
        else:
            raise DataError(f"{where}: answers must be strings, got {item!r}")
    out = [x.strip() for x in out if x.strip()]
    if not out and not allow_empty:
        raise DataError(f"{where}: no non-empty answer")
    return out


def _questions(value: Any, where: str) -> dict[str, list[dict[str, Any]]]:
    if value in (None, ""):
        return {}
    if not isinstance(value, dict):
        raise DataError(
            f"{where}: must be an object of {{kind: [{{prompt, ground_truth}}]}}, got {type(value).__name__}"
        )
    out: dict[str, list[dict[str, Any]]] = {}
    for kind, items in value.items():
        items = [items] if isinstance(items, dict) else items
        if not isinstance(items, list):
            raise DataError(f"{where}.{kind}: must be a list of {{prompt, ground_truth}} objects")
        clean = []
        for j, q in enumerate(items):
            at = f"{where}.{kind}[{j}]"
            if not isinstance(q, dict) or not isinstance(q.get("prompt"), str):
                raise DataError(f"{at}: needs a string 'prompt'")
            answers = _answers(q.get("ground_truth"), f"{at}.ground_truth", allow_empty=True)
            if not q["prompt"].strip() or not answers:
                continue  # KnowEdit has a few empty questions/answers; LTE's data builder skips them too
            row = {"prompt": q["prompt"].strip(), "ground_truth": answers}
            if isinstance(q.get("answer"), str):
                row["answer"] = q["answer"]
            clean.append(row)
        if clean:
            out[kind] = clean
    return out


def normalize(record: Any, where: str, default_id: str) -> dict[str, Any]:
    """One validated, normalized edit record; ``where`` (file + record index) prefixes every error."""
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    for key in ("subject", "prompt", "target_new"):
        if not isinstance(record.get(key), str) or not record[key].strip():
            raise DataError(f"{where}: field '{key}' must be a non-empty string, got {record.get(key)!r}")
    rephrase = record.get("rephrase_prompt")
    if rephrase is not None and not isinstance(rephrase, str):
        raise DataError(f"{where}: field 'rephrase_prompt' must be a string, got {type(rephrase).__name__}")
    out = {
        "id": str(record.get("id", default_id)),
        "subject": record["subject"].strip(),
        "prompt": record["prompt"].strip(),
        "rephrase_prompt": rephrase.strip() if rephrase and rephrase.strip() else None,
        "target_new": record["target_new"].strip(),
        # The old answer may be empty (wiki_counterfact record 630: a fact added, not replaced).
        "ground_truth": _answers(record.get("ground_truth", []), f"{where}: field 'ground_truth'", allow_empty=True),
        "fact": record.get("fact") or f"{record['prompt'].strip()} {record['target_new'].strip()}",
        "portability": _questions(record.get("portability"), f"{where}: portability"),
        "locality": _questions(record.get("locality"), f"{where}: locality"),
    }
    # No check that target_new differs from ground_truth: ZsRE-test-all has such records (e.g. record 8), and
    # EasyEdit evaluates them as they are.
    for key in ("relation", "answer"):
        if isinstance(record.get(key), str):
            out[key] = record[key]
    return out


def load_knowedit(path: str | Path, prefix: str | None = None) -> list[dict[str, Any]]:
    """Read a KnowEdit JSON file (a list of records); errors name the file and the record index.

    Args:
        path: a KnowEdit ``.json`` (a JSON list), e.g. ``ZsRE-test-all.json``, ``wiki_counterfact-train_cf.json``.
        prefix: id prefix (default: the file's stem); ids are ``<prefix>-<index>``.
    """
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of edit records, got {type(data).__name__}")
    if not data:
        raise DataError(f"{path}: no edit records")
    prefix = prefix or path.stem
    return [normalize(r, f"{path} record {i}", f"{prefix}-{i:05d}") for i, r in enumerate(data)]


def read_edits(path: str | Path) -> list[dict[str, Any]]:
    """Read the edits stage's JSONL (``data/edits/{train,eval}.jsonl``), validated like KnowEdit records."""
    rows = read_jsonl_numbered(path)
    out = [normalize(r, f"{path} line {n}", f"edit-{i:05d}") for i, (n, r) in enumerate(rows)]
    ids = [r["id"] for r in out]
    if len(set(ids)) != len(ids):
        raise DataError(f"{path}: edit ids must be unique")
    return out


def in_scope(edit: dict[str, Any]) -> list[tuple[str, str, list[str], str | None]]:
    """``(kind, question, answers, answer sentence)`` the edit must change: prompt, rephrase, portability."""
    out = [("prompt", edit["prompt"], [edit["target_new"]], edit.get("answer"))]
    if edit.get("rephrase_prompt"):
        out.append(("rephrase", edit["rephrase_prompt"], [edit["target_new"]], edit.get("answer")))
    for qs in edit["portability"].values():
        out += [("portability", q["prompt"], q["ground_truth"], q.get("answer")) for q in qs]
    return out


def out_of_scope(edit: dict[str, Any]) -> list[tuple[str, str, list[str], str | None]]:
    """``(kind, question, answers, answer sentence)`` the edit must leave unchanged (locality)."""
    return [("locality", q["prompt"], q["ground_truth"], q.get("answer"))
            for qs in edit["locality"].values() for q in qs]
