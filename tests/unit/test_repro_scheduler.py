"""alignpipe_ops.repro's scheduler on a made-up DAG, with shell commands in place of `dvc repro --single-item`:
at most --jobs at a time, nothing starts before its upstream is done, a failure stops new starts (or, with
--keep-going, only its downstream), and the plan's helpers (what starts, in which order)."""

import io
import sys

from alignpipe_ops.repro import Scheduler, Step, needed, priority

# a -> b -> d, a -> c, e alone: edges as upstream sets
DAG = {"a": set(), "b": {"a"}, "c": {"a"}, "d": {"b"}, "e": set()}


def _steps(changed=("a", "b", "c", "d", "e")):
    return [Step(name, set(up), name in changed) for name, up in DAG.items()]


def _scheduler(tmp_path, jobs, keep_going=False, fail=()):
    log = tmp_path / "events.txt"

    def command(name):
        code = 1 if name in fail else 0
        script = (f"import time; open({str(log)!r}, 'a').write('start {name} %f\\n' % time.time()); "
                  f"time.sleep(0.3); open({str(log)!r}, 'a').write('end {name} %f\\n' % time.time()); "
                  f"raise SystemExit({code})")
        return [sys.executable, "-c", script]

    out = io.StringIO()
    return Scheduler(_steps(), jobs, keep_going, str(tmp_path), out=out, command=command), log, out


def _events(log):
    rows = [line.split() for line in log.read_text().splitlines()]
    return [(kind, name, float(t)) for kind, name, t in rows]


def test_jobs_bound_and_upstream_first(tmp_path):
    sched, log, out = _scheduler(tmp_path, jobs=2)
    assert sched.run(needed(_steps())) == 0
    events = _events(log)
    times = {(kind, name): t for kind, name, t in events}
    for name, ups in DAG.items():
        for up in ups:
            assert times[("start", name)] >= times[("end", up)], (name, up)
    running = peak = 0
    for kind, _, _ in sorted(events, key=lambda e: e[2]):
        running += 1 if kind == "start" else -1
        peak = max(peak, running)
    assert peak == 2
    assert "slowest:" in out.getvalue()


def test_a_failure_stops_new_starts_and_blocks_its_downstream(tmp_path):
    sched, log, out = _scheduler(tmp_path, jobs=1, fail=("b",))
    assert sched.run(needed(_steps())) == 1
    started = [name for kind, name, _ in _events(log) if kind == "start"]
    assert "b" in started and "d" not in started
    assert sched.steps["d"].state == "blocked"
    assert "b failed (exit status 1)" in out.getvalue()
    assert "not run:" in out.getvalue()


def test_keep_going_runs_what_does_not_depend_on_the_failure(tmp_path):
    sched, log, _ = _scheduler(tmp_path, jobs=1, keep_going=True, fail=("b",))
    assert sched.run(needed(_steps())) == 1
    started = {name for kind, name, _ in _events(log) if kind == "start"}
    assert started == {"a", "b", "c", "e"}


def test_only_changed_stages_and_their_downstream_start():
    steps = _steps(changed=("b",))
    assert needed(steps) == {"b", "d"}
    assert needed(_steps(changed=())) == set()
    order = priority(_steps())
    assert order[0] == "a" and order.index("b") < order.index("c")  # a -> b -> d is the longest chain
    assert order.index("e") > order.index("b")
