"""Run events: facts about one execution of a stage (resumed from step k, reused n stored outputs, sent m requests).

    from alignpipe.utils import events
    events.record("train", what="SFT", resumed_from_step=4, steps_run=4, max_steps=8)

The library announces these facts and never stores them: they differ between a run that was killed and resumed and
one that was not, while the outputs must be byte-identical, so they never go into DVC outputs. Whoever runs the
library subscribes a sink: the flows and the tests subscribe the run record of :mod:`alignpipe_ops.runlog`
(``.cache/alignpipe/runs/<stage>.jsonl``). With no sink subscribed an event is dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Sink = Callable[[str, dict[str, Any]], Any]
_SINKS: list[Sink] = []


def subscribe(sink: Sink) -> None:
    """Call ``sink(event, facts)`` for every event from now on (a sink already subscribed is not added twice)."""
    if sink not in _SINKS:
        _SINKS.append(sink)


def unsubscribe(sink: Sink) -> None:
    if sink in _SINKS:
        _SINKS.remove(sink)


def record(event: str, **facts: Any) -> None:
    """Announce one event (``facts`` must be JSON-able) to every subscribed sink."""
    for sink in list(_SINKS):
        sink(event, facts)
