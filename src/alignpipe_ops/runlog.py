"""Run records: what one execution of a stage did (resumed from step k, reused n stored outputs, sent m requests).

    from alignpipe_ops import runlog
    runlog.install()                # store the library's events (alignpipe.utils.events.record) from now on
    runlog.record("train", what="SFT", resumed_from_step=4, steps_run=4, max_steps=8)
    runlog.runs("sft")[-1]          # the records of the last run of the sft stage, oldest first

These are facts about a run, not about its artifacts: a run killed and resumed and one that was not make the
same bytes but do different work, and a warm LLM cache answers without requests. So they never go into DVC
outputs (``metrics.json`` is hashed in ``dvc.lock`` and must be equal across such runs); they are appended to
``<work root>/runs/<stage>.jsonl`` (``.cache/alignpipe/runs/``, moved by ``ALIGNPIPE_WORK_DIR``), one JSON object
per line, flushed and fsynced when written, so a killed run leaves the records of what it finished.

Every line has ``stage`` (DVC's stage name from ``DVC_STAGE`` when DVC runs the command, e.g. ``align@local``; else
the name the flow set; else ``adhoc``), ``run`` (one id per process), ``pid``, ``time`` and ``event``.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

from alignpipe.utils import events

RUN_ID = uuid.uuid4().hex[:12]
_stage: str | None = None


def root() -> Path:
    return Path(os.environ.get("ALIGNPIPE_WORK_DIR", ".cache/alignpipe")) / "runs"


def set_stage(name: str) -> None:
    """The stage name to file records under when DVC does not say (``python -m flows.<stage>`` run directly)."""
    global _stage
    _stage = name


def stage_name() -> str:
    return os.environ.get("DVC_STAGE") or _stage or "adhoc"


def record(event: str, **facts: Any) -> dict[str, Any]:
    """Append one record (``facts`` must be JSON-able) to the current stage's run log; returns it."""
    stage = stage_name()
    row = {"stage": stage, "run": RUN_ID, "pid": os.getpid(), "time": round(time.time(), 3), "event": event, **facts}
    path = root() / f"{stage.replace('/', '_')}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        torn = False
        if fh.seek(0, os.SEEK_END) > 0:
            fh.seek(-1, os.SEEK_END)
            torn = fh.read(1) != b"\n"
        # A line torn by a kill mid-write is ended first, or this record would be glued to it and lost.
        fh.write((b"\n" if torn else b"") + (json.dumps(row, sort_keys=True, default=str) + "\n").encode())
        fh.flush()
        os.fsync(fh.fileno())
    return row


def read(stage: str, directory: str | Path | None = None) -> list[dict[str, Any]]:
    """Every record of ``stage`` in order (a torn last line, from a kill during a write, is skipped)."""
    path = Path(directory) if directory is not None else root()
    path = path / f"{stage.replace('/', '_')}.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def runs(stage: str, directory: str | Path | None = None) -> list[list[dict[str, Any]]]:
    """The records of ``stage`` grouped by run, runs in the order they started."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for row in read(stage, directory):
        grouped.setdefault(row["run"], []).append(row)
    return list(grouped.values())


def _sink(event: str, facts: dict[str, Any]) -> None:
    record(event, **facts)


def install() -> None:
    """Store the library's run events (:mod:`alignpipe.utils.events`) in the run record from now on.

    ``flows._common.main`` and the test session (``tests/conftest.py``) call it; calling it again changes nothing.
    """
    events.subscribe(_sink)
