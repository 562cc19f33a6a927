"""The one adapter between the library and Prefect: ``python -m flows.<stage>`` runs one stage as one flow.

Every ``flows/<stage>.py`` is ``main("<stage>", _args)``. :func:`main` parses ``--params`` and the stage's own
arguments, validates the whole params file (a mistake fails in well under a second, before Prefect, torch or the
stage are imported), imports ``alignpipe.stages.<stage>`` and runs one Prefect flow, named after the stage
instance (``align@global``), that calls the stage's ``run(params, **args)`` once.

Prefect is imported inside the functions here, never at module level: :func:`main` first applies the offline
environment and installs the network audit, which must be in place before Prefect (and through the stages
transformers and datasets) read their settings or open a connection.

Timings (process start -> flow start -> the stage's ``run()`` -> end) are written to ``.cache/alignpipe/timings/``,
and each run's start and end to its run record (``.cache/alignpipe/runs/<stage>.jsonl``, ``alignpipe_ops.runlog``),
never into DVC outputs, so outputs stay byte-identical across runs.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import inspect
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

from alignpipe.config import ROLE_NAMES, Params, UserError, check_instance, load_params
from alignpipe.utils.env import apply_offline_env
from alignpipe.utils.io import dumps, machine_fault, write_json
from alignpipe.utils.seed import set_threads
from alignpipe_ops import dvcstate, netaudit, runlog
from flows import STARTED

_TIMINGS: dict[str, float] = {}

BAD_INPUT = (UserError,)  # ConfigError, DataError, LLMError: they name the bad key / file:line / role; no traceback


@cache
def _llm_call() -> Any:
    """The Prefect task of one remote role call with its retries (``alignpipe.llm.fanout.call``), run wherever the
    flow's task runner puts it; made on first use, as Prefect is imported only once a flow runs."""
    from prefect import task
    from prefect.cache_policies import NO_CACHE

    from alignpipe.llm.fanout import call  # lazy: only stages whose run() takes fan_out (they import alignpipe.llm)

    return task(call, name="llm_call", cache_policy=NO_CACHE, persist_result=False, task_run_name="llm-{spec[role]}")


def fan_out(spec: dict) -> Callable[[list], Iterator[tuple[int, Any]]]:
    """A role's mapper: its uncached requests as mapped ``llm_call`` tasks; answers yielded as they arrive."""
    from prefect import unmapped
    from prefect.futures import as_completed

    def mapper(requests: list, deadline_at: float | None = None) -> Iterator[tuple[int, Any]]:
        futures = _llm_call().map(unmapped(spec), requests, unmapped(deadline_at))
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


def instance_name(stage: str, args: dict[str, Any]) -> str:
    """The stage instance a run is filed under: DVC's (``align@global``), else ``<stage>@<--name or --variant>``."""
    if os.environ.get("DVC_STAGE"):
        return os.environ["DVC_STAGE"]
    which = args.get("name") or args.get("variant")
    return f"{stage}@{which}" if which else stage


def params_summary(params: Params, path: str) -> str:
    """One log line for the resolved params: the file and a hash of the whole resolved config."""
    digest = hashlib.sha256(dumps(params.model_dump(mode="json")).encode()).hexdigest()[:16]
    return f"params: {path} (resolved config sha256 {digest})"


def _write_timings(name: str) -> dict:
    """Write this run's timings (``flow_to_first_task_s``: flow start -> the stage's ``run()``); returns them."""
    end = time.time()
    flow_start = _TIMINGS.get("flow_start", end)
    record = {
        "stage": name,
        "prefect_server": os.environ.get("PREFECT_API_URL", "ephemeral"),
        "process_to_flow_s": round(flow_start - STARTED, 3),
        "flow_to_first_task_s": round(_TIMINGS.get("run_start", end) - flow_start, 3),
        "total_s": round(end - STARTED, 3),
    }
    out = Path(os.environ.get("ALIGNPIPE_WORK_DIR", ".cache/alignpipe")) / "timings"
    write_json(out / f"{name}.json", record)  # atomic: a kill as the stage ends leaves the old file, never a torn one
    return record


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


def run_flow(stage: str, name: str, params: Params, params_path: str, run: Callable[..., dict],
             args: dict[str, Any]) -> dict:
    """Run ``run(params, **args)`` once inside one Prefect flow ``<stage>`` whose run is named and tagged ``name``.

    A stage whose ``run()`` takes ``fan_out`` gets :func:`fan_out` and the task runner ``roles.runner`` names (its
    remote role calls become mapped tasks); any other stage submits no task and keeps Prefect's default runner.
    """
    from prefect import flow, get_run_logger, tags

    _quiet_bad_input_tracebacks()  # Prefect's console handler exists once prefect is imported
    kwargs = dict(args)
    options: dict[str, Any] = {}
    if "fan_out" in inspect.signature(run).parameters:
        kwargs["fan_out"] = fan_out
        options["task_runner"] = task_runner(params)

    def stage_flow(cli_args: dict[str, Any]) -> dict:  # the run's parameters in Prefect: the CLI args, for the UI
        _TIMINGS["flow_start"] = time.time()
        get_run_logger().info(params_summary(params, params_path))
        _TIMINGS["run_start"] = time.time()
        try:
            return run(params, **kwargs)
        except Exception as err:  # a full or read-only disk met mid-run (a checkpoint, a cache): one line, no traceback
            fault = machine_fault(err)
            if fault is None:
                raise
            raise fault from None

    summary = (sys.modules[run.__module__].__doc__ or "").strip().split("\n\n")[0]  # the stage's docstring
    prefect_flow = flow(stage_flow, name=stage, flow_run_name=lambda: name, description=summary or None,
                        log_prints=False, validate_parameters=False, persist_result=False, **options)
    with tags(name):
        return prefect_flow(cli_args=args)


def _flush_prefect() -> None:
    """Let Prefect's background workers (events, API logs) finish now: left to interpreter exit, they flush after the
    error line and, on a busy machine, log "Still processing items" below it, so it is no longer the last line."""
    if "prefect" not in sys.modules:  # a params mistake: Prefect was never imported
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (EventsWorker, APILogWorker):
        worker.drain_all(timeout=30, at_exit=False)


def main(stage: str, add_args: Callable[[argparse.ArgumentParser], None] | None = None, *,
         module: str | None = None) -> None:
    """CLI entry of ``python -m flows.<stage>``: run ``alignpipe.stages.<stage>`` (or ``module``) as one flow.

    Exit status 0, or 2 with one line ``error in stage '<stage>': ...`` for a bad input (params, data file, role),
    or 2 with argparse's usage for a bad argument; anything else fails with its traceback.
    """
    apply_offline_env()  # before Prefect, transformers and datasets read their settings
    netaudit.install_from_env()  # ALIGNPIPE_NET_AUDIT=<file>: record any network attempt beyond 127.0.0.1
    runlog.install()  # the library's run events (alignpipe.utils.events) go to this run's record
    # The library's progress messages (stage config, metrics, role calls) at INFO: prefect.toml hands the
    # "alignpipe" logger to Prefect's handlers (terminal and UI), but a logger without a level inherits the root's
    # WARNING, which dropped them all. ALIGNPIPE_LOG_LEVEL=WARNING quiets them again.
    logging.getLogger("alignpipe").setLevel(os.environ.get("ALIGNPIPE_LOG_LEVEL", "INFO").upper())
    caller = sys.modules.get("__main__")
    parser = argparse.ArgumentParser(prog=f"python -m flows.{stage}", description=getattr(caller, "__doc__", None),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    if add_args:
        add_args(parser)
    args = vars(parser.parse_args())
    params_path = args.pop("params")
    name = instance_name(stage, args)
    if os.environ.get("DVC_STAGE"):
        dvcstate.snapshot_lockfile(".")  # what dvc.lock held before DVC rewrites it for this stage (after a crash)
    runlog.set_stage(name)
    runlog.record("start", argv=sys.argv[1:])
    status = "failed"
    try:
        params = load_params(params_path)  # the whole file, before anything heavy is imported
        check_instance(params, stage, args)  # --variant / --name: an unknown one fails here too
        set_threads(params.torch_threads)
        run = importlib.import_module(module or f"alignpipe.stages.{stage}").run
        run_flow(stage, name, params, params_path, run, args)
        status = "completed"
    except BAD_INPUT as err:
        _flush_prefect()
        print(f"error in stage '{stage}': {err}", file=sys.stderr)
        sys.exit(2)
    finally:
        timings = _write_timings(name)
        runlog.record("end", status=status, total_s=timings["total_s"])
