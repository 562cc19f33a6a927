"""The flow wrapper `flows._common.main`: a bad params file fails in one line before anything heavy is imported, a
bad argument fails with argparse's usage, and a stage runs once inside one Prefect flow named and tagged after its
instance, given `fan_out` only when its `run()` takes it. A stage whose LLM server is down exits non-zero with one
line naming the role and the server.

Bad params, data files and model paths: the table in tests/reliability/test_bad_inputs.py (real CLI runs)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from alignpipe_ops import runlog
from flows._common import instance_name, main

# A stand-in stage (alignpipe.stages.<stage>'s contract): what the flow gave it, written to --out.
STAGE = textwrap.dedent('''
    """demo stage: records what the flow wrapper passed to run()."""
    import json

    from prefect.runtime import flow_run

    from alignpipe.utils.io import DataError


    def run(params, name, out, fail=False{fan_out}):
        if fail:
            raise DataError("data/demo.jsonl:3: not JSON")
        record = {{"run_name": flow_run.name, "tags": flow_run.tags, "flow": flow_run.flow_name, "seed": params.seed,
                  "fan_out": callable(locals().get("fan_out")), "args": {{"name": name, "out": out, "fail": fail}}}}
        with open(out, "w") as fh:
            json.dump(record, fh)
        return {{}}
''')


# `python -m flows.demo --name <n> --out <file> [--fail]` for the stand-in stage in module argv[1].
DEMO_FLOW = textwrap.dedent("""
    import sys
    from flows._common import main

    def _args(parser):
        parser.add_argument("--name", required=True)
        parser.add_argument("--out", required=True)
        parser.add_argument("--fail", action="store_true")

    module, sys.argv = sys.argv[1], ["flows.demo", *sys.argv[2:]]
    main("demo", _args, module=module)
""")


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory):
    """One Prefect server for this module's flow runs (no temporary server per process)."""
    from flows.server import start_server, stop_server

    proc, api = start_server(cwd=tmp_path_factory.mktemp("prefect"))
    yield api
    stop_server(proc)


def _demo(tmp_path, repo_root, api, module, *args):
    """Run the stand-in stage ``module`` (a file in tmp_path) through ``main`` in a fresh process, with
    ``tmp_path/params.yaml`` (seed 7; torch_threads null, so torch is not imported at all)."""
    (tmp_path / "params.yaml").write_text("seed: 7\ntorch_threads: null\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(repo_root / "src"), str(repo_root)]),
           "PREFECT_API_URL": api}
    env.pop("DVC_STAGE", None)
    argv = [sys.executable, "-c", DEMO_FLOW, module, "--params", str(tmp_path / "params.yaml"), *args]
    return subprocess.run(argv, cwd=repo_root, env=env, capture_output=True, text=True, timeout=300)


STAGES = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "flows").glob("*.py")
                if not p.stem.startswith("_") and p.stem != "server")
ARGS = {"align": ["--variant", "dpo_full"], "evaluate": ["--name", "sft", "--model-dir", "data/sft/model"],
        "sft_mix": ["--name", "seed"]}  # the required arguments of the stages that have some
HEAVY = ("prefect", "torch", "transformers", "trl", "peft", "datasets", "numpy", "scipy", "openai")


def test_bad_params_fail_in_one_line_before_prefect_torch_or_the_stage_are_imported(tmp_path, repo_root):
    bad = tmp_path / "params.yaml"
    bad.write_text("seed: 1\nworld:\n  n_entitiez: 3\n")
    probe = textwrap.dedent(f"""
        import sys
        sys.argv = ["flows.world", "--params", {str(bad)!r}]
        from flows._common import main
        try:
            main("world")
        except SystemExit as stop:
            heavy = [m for m in ("prefect", "torch", "transformers", "alignpipe.stages.world") if m in sys.modules]
            print(stop.code, heavy)
    """)
    proc = subprocess.run([sys.executable, "-c", probe], cwd=repo_root, capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "2 []", proc.stdout + proc.stderr
    assert proc.stderr.splitlines() == [
        f"error in stage 'world': {bad}: unknown key 'world.n_entitiez' (did you mean 'n_entities'?); allowed keys "
        "here: ['categories', 'corpus_instruction_copies', 'corpus_paraphrases', 'demo_noise', "
        "'eval_groups_per_category', 'n_entities', 'preference_groups_per_category', 'train_groups_per_category']"]


@pytest.mark.parametrize("stage", STAGES)
def test_every_stage_checks_params_before_any_heavy_import(stage, tmp_path, repo_root):
    """A params typo is reported before the trainers, torch or Prefect load, in every stage (issue 18: it took
    5-15 s in align, sft and base). The seconds it takes are measured by bench/stage_start.py, not here."""
    bad = tmp_path / "params.yaml"
    bad.write_text("seed: 1\nsft:\n  max_lenght: 64\n")
    probe = textwrap.dedent(f"""
        import runpy, sys
        sys.argv = ["flows.{stage}", "--params", {str(bad)!r}, *{ARGS.get(stage, [])!r}]
        try:
            runpy.run_module("flows.{stage}", run_name="__main__")
        except SystemExit as stop:
            print(stop.code, [m for m in {HEAVY!r} if m in sys.modules])
    """)
    proc = subprocess.run([sys.executable, "-c", probe], cwd=repo_root, capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "2 []", proc.stdout + proc.stderr
    assert proc.stderr.splitlines()[-1].startswith(f"error in stage '{stage}': {bad}: unknown key 'sft.max_lenght' "
                                                   "(did you mean 'max_length'?)"), proc.stderr


def test_an_unknown_argument_fails_with_the_usage(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["flows.world", "--variant", "global"])
    with pytest.raises(SystemExit) as stop:
        main("world")
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: python -m flows.world [-h] [--params PARAMS]")
    assert err.splitlines()[-1] == "python -m flows.world: error: unrecognized arguments: --variant global"


def test_instance_name_is_dvcs_else_the_stage_and_its_name_or_variant(monkeypatch):
    monkeypatch.delenv("DVC_STAGE", raising=False)
    assert instance_name("world", {}) == "world"
    assert instance_name("align", {"variant": "global"}) == "align@global"
    assert instance_name("evaluate", {"name": "sft", "model_dir": "data/sft/model"}) == "evaluate@sft"
    monkeypatch.setenv("DVC_STAGE", "evaluate@dpo_full")
    assert instance_name("evaluate", {"name": "sft"}) == "evaluate@dpo_full"


@pytest.mark.parametrize("takes_fan_out", [True, False], ids=["fan_out", "no_fan_out"])
def test_one_flow_named_after_the_instance_calls_run_once(tmp_path, repo_root, prefect_api, takes_fan_out):
    module = f"demo_stage_{takes_fan_out}"
    (tmp_path / f"{module}.py").write_text(STAGE.format(fan_out=", fan_out=None" if takes_fan_out else ""))
    out = tmp_path / "passed.json"
    proc = _demo(tmp_path, repo_root, prefect_api, module, "--name", "x", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]

    passed = json.loads(out.read_text())
    assert (passed["run_name"], passed["flow"], passed["tags"]) == ("demo@x", "demo", ["demo@x"])
    assert passed["seed"] == 7  # --params, validated and passed as a Params
    assert passed["args"] == {"name": "x", "out": str(out), "fail": False}  # and no `params=`: run() takes none
    assert passed["fan_out"] is takes_fan_out
    assert f"params: {tmp_path / 'params.yaml'} (resolved config sha256 " in proc.stderr  # one line, not the whole config
    work = tmp_path / "_work"  # ALIGNPIPE_WORK_DIR (tests/conftest.py)
    (run,) = runlog.runs("demo@x", work / "runs")
    assert [(r["event"], r.get("status")) for r in run] == [("start", None), ("end", "completed")]
    timings = json.loads((work / "timings" / "demo@x.json").read_text())
    assert set(timings) == {"stage", "prefect_server", "process_to_flow_s", "flow_to_first_task_s", "total_s"}
    assert (timings["stage"], timings["prefect_server"]) == ("demo@x", prefect_api)
    assert 0 < timings["process_to_flow_s"] <= timings["total_s"]


def test_a_bad_input_inside_the_stage_exits_2_with_one_line(tmp_path, repo_root, prefect_api):
    (tmp_path / "demo_stage_failing.py").write_text(STAGE.format(fan_out=""))
    proc = _demo(tmp_path, repo_root, prefect_api, "demo_stage_failing", "--name", "y", "--out", "x.json", "--fail")
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[-1] == "error in stage 'demo': data/demo.jsonl:3: not JSON"
    assert "Traceback" not in proc.stderr  # Prefect's console log of the failed flow run keeps only the message
    run = runlog.runs("demo@y", tmp_path / "_work" / "runs")[-1]
    assert [(r["event"], r.get("status")) for r in run] == [("start", None), ("end", "failed")]


def test_a_full_disk_met_mid_run_exits_2_with_one_line(tmp_path, repo_root, prefect_api):
    """A checkpoint write that meets a full disk (raised where the trainer writes, outside any atomic output)."""
    (tmp_path / "demo_stage_full_disk.py").write_text(textwrap.dedent('''
        import errno


        def run(params, name, out, fail=False):
            raise OSError(errno.ENOSPC, "No space left on device", ".cache/alignpipe/demo/checkpoint-4/optimizer.pt")
    '''))
    proc = _demo(tmp_path, repo_root, prefect_api, "demo_stage_full_disk", "--name", "y", "--out", "x.json")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.splitlines()[-1] == (
        "error in stage 'demo': cannot write .cache/alignpipe/demo/checkpoint-4/optimizer.pt: No space left on device "
        "[ENOSPC]; free disk space, then rerun (earlier outputs are left as they were; training resumes from its last "
        "checkpoint)")
    assert "Traceback" not in proc.stderr


def test_the_librarys_info_messages_reach_the_terminal(tmp_path, repo_root, prefect_api):
    """prefect.toml hands the `alignpipe` logger to Prefect's handlers; its INFO messages (a stage's config and
    metrics, role calls) used to be dropped at the root's WARNING level."""
    (tmp_path / "demo_stage_logging.py").write_text(textwrap.dedent('''
        import logging

        from alignpipe.utils.io import one_line


        def run(params, name, out, fail=False):
            logging.getLogger("alignpipe.stages.demo").info("demo config: %s", one_line({"b": [1, 2], "a": "x"}))
            return {}
    '''))
    proc = _demo(tmp_path, repo_root, prefect_api, "demo_stage_logging", "--name", "y", "--out", "x.json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if "alignpipe.stages.demo" in line]
    assert len(lines) == 1 and lines[0].endswith('| INFO    | alignpipe.stages.demo - demo config: {"a": "x", "b": [1, 2]}')


def test_synthesize_with_its_server_down_fails_after_the_retry_budget(tmp_path, repo_root):
    import socket

    import yaml

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    role = {"backend": "openai", "base_url": f"http://127.0.0.1:{port}/v1", "model": "m", "max_retries": 1,
            "backoff_s": 0.1}
    pages = tmp_path / "pages.jsonl"
    pages.write_text('{"webpage": "A page about a harbor town and its old bridge."}\n')
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"roles": {"generator": role, "teacher": role},
                                      "synthesize": {"webr": {"input": str(pages)}}}))
    proc = subprocess.run(
        [sys.executable, "-m", "flows.synthesize", "--params", str(params)],
        cwd=repo_root, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2
    assert (f"error in stage 'synthesize': role 'generator' (openai model 'm' at http://127.0.0.1:{port}/v1): "
            "gave up after 2 attempts; last error: APIConnectionError") in proc.stderr


@pytest.mark.parametrize(("stage", "args", "message"), [
    ("align", ["--variant", "lora_al"], "unknown align variant 'lora_al'; params.yaml align.variants has ['dpo_full',"),
    ("sft_mix", ["--name", "bothh"], "sft_mix: no mixture 'bothh' in params sft_mix.mixtures ['seed', 'both']"),
], ids=["align-variant", "sft_mix-mixture"])
def test_an_unknown_instance_fails_before_any_heavy_import(stage, args, message, tmp_path, repo_root):
    """`--variant` / `--name` are checked with the params (it took a Prefect start and the trainers' imports)."""
    params = tmp_path / "params.yaml"
    params.write_text("align:\n  variants:\n    dpo_full: {}\n    global: {peft: lora, block: global}\n"
                      "sft_mix:\n  mixtures:\n    seed: [seed]\n    both: [seed, webr, lion]\n")
    probe = textwrap.dedent(f"""
        import runpy, sys
        sys.argv = ["flows.{stage}", "--params", {str(params)!r}, *{args!r}]
        try:
            runpy.run_module("flows.{stage}", run_name="__main__")
        except SystemExit as stop:
            print(stop.code, [m for m in {HEAVY!r} if m in sys.modules])
    """)
    proc = subprocess.run([sys.executable, "-c", probe], cwd=repo_root, capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "2 []", proc.stdout + proc.stderr
    assert proc.stderr.splitlines()[-1].startswith(f"error in stage '{stage}': {message}"), proc.stderr
