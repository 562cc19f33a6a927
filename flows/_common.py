"""The one adapter between the library and Prefect: task/flow decorators, params loading, CLI, timings.

Flows stay thin: each `flows/<stage>.py` chains a few `@stage_task` steps that call library functions.
Timings (process start -> flow start -> first task -> end) are written to `.cache/alignpipe/timings/`, and
each run's start and end to its run record (`.cache/alignpipe/runs/<stage>.jsonl`, `alignpipe_ops.runlog`),
never into DVC outputs, so outputs stay byte-identical across runs.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

_PROCESS_START = time.time()

from alignpipe.utils.env import apply_offline_env  # noqa: E402
from alignpipe_ops.netaudit import install_from_env  # noqa: E402

apply_offline_env()  # before Prefect, transformers and datasets read their settings
install_from_env()  # ALIGNPIPE_NET_AUDIT=<file>: record any network attempt beyond 127.0.0.1

from prefect import Task, flow, get_run_logger, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402
from prefect.utilities.annotations import opaque  # noqa: E402

from alignpipe.config import ROLE_NAMES, ConfigError, Params, load_params  # noqa: E402
from alignpipe.llm.base import LLMError  # noqa: E402
from alignpipe_ops import dvcstate
from alignpipe_ops import runlog  # noqa: E402
from alignpipe.utils.io import DataError, dumps, write_json  # noqa: E402
from alignpipe.utils.seed import set_threads  # noqa: E402

_TIMINGS: dict[str, float] = {}


class _StageTask(Task):
    """A task whose arguments Prefect resolves without walking into them.

    Prefect visits every element of a task's arguments looking for futures to resolve; the pipeline passes whole
    worlds, pools and response lists between its steps (never futures inside them), and that walk cost seconds
    per stage. ``opaque`` keeps the resolution of a top-level future and skips the walk.
    """

    def __call__(self, *args: Any, return_state: bool = False, wait_for: Any = None, **kwargs: Any) -> Any:
        return super().__call__(*(opaque(a) for a in args), return_state=return_state, wait_for=wait_for,
                                **{k: opaque(v) for k, v in kwargs.items()})


def stage_task(fn: Callable | None = None, **kwargs: Any) -> Any:
    """A Prefect task for a pipeline step: no Prefect-side caching or result persistence (DVC caches)."""
    opts = {"cache_policy": NO_CACHE, "persist_result": False, **kwargs}

    def wrap(f: Callable) -> Any:
        def timed(*a: Any, **kw: Any) -> Any:
            _TIMINGS.setdefault("first_task_start", time.time())
            return f(*a, **kw)

        timed.__name__, timed.__doc__, timed.__module__ = f.__name__, f.__doc__, f.__module__
        timed.__wrapped__ = f  # type: ignore[attr-defined]
        return _StageTask(fn=timed, name=f.__name__, **opts)

    return wrap(fn) if fn is not None else wrap


def stage_flow(name: str) -> Callable:
    """A Prefect flow for one pipeline stage (no retries at flow level; tasks decide)."""

    def wrap(f: Callable) -> Any:
        def timed(*a: Any, **kw: Any) -> Any:
            _TIMINGS["flow_start"] = time.time()
            return f(*a, **kw)

        timed.__name__, timed.__doc__, timed.__module__ = f.__name__, f.__doc__, f.__module__
        return flow(name=name, log_prints=False, validate_parameters=False)(timed)

    return wrap


@task(cache_policy=NO_CACHE, persist_result=False, task_run_name="llm-{spec[role]}")
def llm_call(spec: dict, request):
    """One remote role call (with its retries), run wherever the flow's task runner puts it."""
    from alignpipe.llm.fanout import call

    return call(spec, request)


def fan_out(spec: dict) -> Callable:
    """A role's mapper: its uncached requests as mapped ``llm_call`` tasks; answers yielded as they arrive."""
    from prefect import unmapped
    from prefect.futures import as_completed

    def mapper(requests: list) -> Any:
        futures = llm_call.map(unmapped(spec), requests)
        index = {f.task_run_id: i for i, f in enumerate(futures)}
        for future in as_completed(futures):
            yield index[future.task_run_id], future.result()

    return mapper


def task_runner(params: Params) -> Any:
    """The task runner ``roles.runner`` names: threads as wide as the widest role concurrency, Dask, or Ray."""
    section = params.roles.runner
    if section.kind == "thread":
        from prefect.task_runners import ThreadPoolTaskRunner

        width = max(getattr(params.roles, name).concurrency for name in ROLE_NAMES)
        return ThreadPoolTaskRunner(max_workers=width)
    if section.kind == "ray":  # the optional extra; config validation already checked it is installed
        from prefect_ray import RayTaskRunner

        if section.address:
            return RayTaskRunner(address=section.address)
        return RayTaskRunner(init_kwargs={"num_cpus": section.workers, "include_dashboard": False})
    from prefect_dask import DaskTaskRunner

    if section.address:
        return DaskTaskRunner(address=section.address)
    return DaskTaskRunner(cluster_kwargs={"n_workers": section.workers, "processes": section.processes,
                                          "threads_per_worker": 1, "dashboard_address": None})


@stage_task
def load_stage_params(path: str) -> Params:
    """Validate the whole params.yaml before any work, then log the resolved sections."""
    params = load_params(path)
    set_threads(params.torch_threads)
    get_run_logger().info("resolved params:\n%s", dumps(params.model_dump(mode="json")))
    return params


def _write_timings(stage: str) -> dict:
    end = time.time()
    t = {"process_start": _PROCESS_START, **_TIMINGS, "end": end}
    record = {
        "stage": stage,
        "prefect_server": os.environ.get("PREFECT_API_URL", "ephemeral"),
        "process_to_flow_s": round(t.get("flow_start", end) - _PROCESS_START, 3),
        "flow_to_first_task_s": round(t.get("first_task_start", end) - t.get("flow_start", end), 3),
        "total_s": round(end - _PROCESS_START, 3),
    }
    out = Path(os.environ.get("ALIGNPIPE_WORK_DIR", ".cache/alignpipe")) / "timings"
    write_json(out / f"{stage}.json", record)  # atomic: a kill as the stage ends leaves the old file, never a torn one
    return record


BAD_INPUT = (ConfigError, DataError, LLMError)  # errors that name the bad key / file:line / role: no traceback


class _BadInputWithoutTraceback(logging.Filter):
    """Prefect logs a failed task or flow with its traceback; for a bad input the message is the whole story, so the
    console shows that one line (the Prefect API and UI, whose handler runs first, keep the traceback)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], BAD_INPUT):
            record.exc_info, record.exc_text = None, None
        return True


def _quiet_bad_input_tracebacks() -> None:
    from prefect.logging.handlers import PrefectConsoleHandler

    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler):
            handler.addFilter(_BadInputWithoutTraceback())


def main(stage: str, flow_fn: Callable, extra_args: Callable[[argparse.ArgumentParser], None] | None = None) -> None:
    """CLI entry for `python -m flows.<stage>`: parse args, run the flow, exit non-zero with one clear line."""
    _quiet_bad_input_tracebacks()
    parser = argparse.ArgumentParser(prog=f"python -m flows.{stage}", description=flow_fn.__doc__)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    if extra_args:
        extra_args(parser)
    args = vars(parser.parse_args())
    # DVC names the stage instance (align@local); run by hand, the flow's name (and --name) says which it is.
    name = os.environ.get("DVC_STAGE") or (stage if "name" not in args else f"{stage}@{args['name']}")
    if os.environ.get("DVC_STAGE"):
        dvcstate.snapshot_lockfile(".")  # what dvc.lock held before DVC rewrites it for this stage (after a crash)
    runlog.set_stage(name)
    runlog.record("start", argv=sys.argv[1:])
    status = "failed"
    try:
        load_params(args["params"])  # fail fast, before Prefect starts anything, on a bad params file
        flow_fn(**{k.replace("-", "_"): v for k, v in args.items()})
        status = "completed"
    except BAD_INPUT as err:
        print(f"error in stage '{stage}': {err}", file=sys.stderr)
        sys.exit(2)
    finally:
        timings = _write_timings(name)
        runlog.record("end", status=status, total_s=timings["total_s"])
