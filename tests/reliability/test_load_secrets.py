"""Load and secrets (issue 8, properties 5 and 7): the real flows against a real OpenAI-compatible server behind a
fault-injecting proxy, with every role on the openai backend, concurrency 8 and a canary API key.

    PYTHONPATH=src:. python -m pytest tests/reliability/test_load_secrets.py -s    # -s prints the figures

One module-scoped scenario, in a temporary copy of the repo (tiny profile, its world built in-process, one Prefect
server from flows/server.py): ``transformers serve`` of a tiny local model (tests/unit/llm/conftest.py), the proxy
in front of it failing 25% of first attempts (500, 429 + Retry-After, 503, reset mid-response, slow past the
client timeout, a 500 echoing the request headers), then through DVC (``dvc repro -s``): synthesize (WebR + one
Lion round); evaluate@base with the proxy down (the stage must fail, reported, in bounded time); evaluate@base
judged by roles.judge; a forced rerun of both (every answer from the cache, nothing sent). The tests then check
the counters against what the proxy saw, the outputs against the answers it relayed, the in-flight bound, and
that the key the proxy received in every Authorization header is in no file the runs wrote nor in their output.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

import faultproxy  # tests/reliability/faultproxy.py (pyproject: pytest pythonpath)
import yaml

pytestmark = [pytest.mark.fault, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
KEY_ENV = "ALIGNPIPE_CANARY_KEY"
CHAT = "/v1/chat/completions"
RETRIES, TIMEOUT_S, CONCURRENCY = 5, 3.0, 8


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = sys.modules.setdefault(name, importlib.util.module_from_spec(spec))  # dataclasses look it up there
    spec.loader.exec_module(module)
    return module


_llm = _load("llm_test_conftest", REPO / "tests/unit/llm/conftest.py")
openai_server = _llm.openai_server  # the LLM tests' `transformers serve`, here serving the model below


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    """The LLM tests' tiny model, sampling (``do_sample`` in its generation config): greedy, the random model
    writes only newlines, which every role rejects, and the stages would have no rows to count."""
    from transformers import GenerationConfig

    model_dir = _llm.build_tiny_model(tmp_path_factory.mktemp("tiny-llm-load") / "model")
    base = GenerationConfig.from_pretrained(model_dir)
    GenerationConfig(do_sample=True, bos_token_id=base.bos_token_id, eos_token_id=base.eos_token_id,
                     pad_token_id=base.pad_token_id).save_pretrained(model_dir)
    return model_dir


def _params(dst: Path, base_url: str, model: str) -> dict:
    from alignpipe.profile import apply_profile

    params = apply_profile("tiny", dst / "params.yaml", dst / "profiles")
    role = {"backend": "openai", "base_url": base_url, "model": model, "api_key_env": KEY_ENV, "max_tokens": 8,
            "temperature": 1.0,  # every role samples (the judge too): distinct answers to tell apart
            "concurrency": CONCURRENCY, "max_retries": RETRIES, "backoff_s": 0.05, "backoff_max_s": 1.0,
            "timeout_s": TIMEOUT_S}
    params["roles"] = {**params["roles"], **{name: dict(role) for name in
                                             ("teacher", "referee", "generator", "editor", "judge")}}
    # the tiny random model's scores never parse: count them (what is tested here), do not stop the stage
    params["roles"]["max_unusable_fraction"] = 1.0
    webr, lion = params["synthesize"]["webr"], params["synthesize"]["lion"]
    webr.update(max_pages=6, persona_max_tokens=8, request_max_tokens=8, response_max_tokens=8)
    lion.update(rounds=1, max_prompts=6, new_hard=2, new_easy=2, max_attempts=2.0, eval_prompts=3, max_new_tokens=8,
                trainer={"max_steps": 2, "per_device_train_batch_size": 4})
    params["evaluate"].update(judge="roles", levels=[1, 2, 3], max_new_tokens=8, bootstrap_samples=0)
    return params


class Scenario:
    """The runs and what they left: processes, durations, outputs read before a rerun replaced them."""

    def __init__(self, repo: Path, env: dict, proxy, canary: str, model: str):
        self.repo, self.env, self.proxy, self.canary, self.model = repo, env, proxy, canary, model
        self.procs: dict[str, subprocess.CompletedProcess] = {}
        self.seconds: dict[str, float] = {}
        self.saved: dict[str, dict] = {}

    def run(self, label: str, *args: str) -> subprocess.CompletedProcess:
        self.proxy.label = label
        t0 = time.time()
        proc = subprocess.run(["dvc", "repro", "-s", *args], cwd=self.repo, env=self.env, capture_output=True,
                              text=True, timeout=600)
        self.seconds[label] = round(time.time() - t0, 1)
        self.procs[label] = proc
        return proc

    def read(self, rel: str) -> dict:
        return json.loads((self.repo / rel).read_text())

    def run_roles(self, stage: str) -> dict:
        """The role counters of ``stage``'s last run, from its run record (requests, retries and cache hits depend
        on what the cache held, so they are not in ``metrics.json``): the total of every role for synthesize, the
        judge role's for evaluate."""
        from alignpipe_ops import runlog

        (last,) = [r for r in runlog.runs(stage, self.repo / ".cache/alignpipe/runs")[-1] if r["event"] == "roles"]
        return last["counters"]["total"] if "counters" in last else last["judge"]

    def jsonl(self, rel: str) -> list[dict]:
        return [json.loads(line) for line in (self.repo / rel).read_text().splitlines() if line.strip()]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def repo(tmp_path_factory, copy_repo):
    """A copy of the repo (tiny profile) with its world built, and a Prefect server starting in it
    (`python -m flows.server`, i.e. flows/server.py's start_server; state in the copy's .prefect/) while the
    LLM server starts. Yields (copy, Prefect API URL, seconds spent here)."""
    from alignpipe.config import validate_params
    from alignpipe.stages import world as world

    t0 = time.time()
    dst = copy_repo(tmp_path_factory.mktemp("load-repo"))
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    server = subprocess.Popen([sys.executable, "-m", "flows.server", "--port", str(port)], cwd=dst,
                              env={**env, "PYTHONPATH": f"{dst / 'src'}:{dst}"}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        # The world is not under test: built here, in-process, while the servers start (synthesize reads it).
        world.run(validate_params(_params(dst, "http://unused/v1", "unused")), dst / "data/world")
        yield dst, f"http://127.0.0.1:{port}/api", time.time() - t0
    finally:
        server.send_signal(signal.SIGINT)  # flows.server stops its Prefect server on the way out
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()


def _wait_healthy(api: str, timeout: float = 180.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{api}/health", timeout=2) as r:  # noqa: S310 (loopback)
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"prefect server not healthy at {api} after {timeout:.0f}s")


@pytest.fixture(scope="module")
def scenario(repo, openai_server):
    dst, api, t_repo = repo
    upstream, model = openai_server
    t_start = time.time()
    _wait_healthy(api)
    proxy = faultproxy.FaultProxy(upstream.removesuffix("/v1"), share=0.25, seed=0, slow_s=3 * TIMEOUT_S,
                                  max_faults=3, down_fault="echo500").start()
    (dst / "params.yaml").write_text(yaml.safe_dump(_params(dst, f"{proxy.url}/v1", model), sort_keys=False))
    shutil.copytree(model, dst / "data/base/model")  # the Lion student and the evaluated model (dvc deps)
    canary = f"sk-alignpipe-canary-{secrets.token_hex(16)}"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "PREFECT_API_URL": api,
           "ALIGNPIPE_WORK_DIR": str(dst / ".cache/alignpipe"), "PYTHONPATH": str(dst / "src"), KEY_ENV: canary,
           "OMP_NUM_THREADS": "1"}
    s = Scenario(dst, env, proxy, canary, model)
    s.seconds["repo_and_world"] = round(t_repo, 1)
    s.seconds["wait_servers"] = round(time.time() - t_start, 1)
    try:
        proc = s.run("synth", "synthesize")
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
        s.saved["synth"] = {"metrics": s.read("data/synthesize/metrics.json"), "calls": s.run_roles("synthesize"),
                            "webr": (dst / "data/synthesize/webr.jsonl").read_bytes()}
        proxy.mode = "down"  # an outage: the judge's requests all fail
        s.run("outage", "evaluate@base")
        s.saved["outage_output"] = (dst / "data/evaluate/base").exists()
        proxy.mode = "plan"
        proc = s.run("judge", "evaluate@base")
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
        s.saved["judge"] = {"metrics": s.read("data/evaluate/base/metrics.json"), "calls": s.run_roles("evaluate@base"),
                            "generations": (dst / "data/evaluate/base/generations.jsonl").read_bytes()}
        proc = s.run("rerun", "-f", "synthesize", "evaluate@base")
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
        s.seconds["after_servers"] = round(time.time() - t_start, 1)
        yield s
        print("\nload figures:", json.dumps(_figures(s), indent=1))  # shown with -s
    finally:
        proxy.stop()


def _figures(s: Scenario) -> dict:
    runs = {}
    for label in ("synth", "outage", "judge", "rerun"):
        seen = s.proxy.attempts(label)
        runs[label] = {"attempts": len(seen), "requests": len({a.body_sha for a in seen}),
                       "injected": dict(Counter(a.fault for a in seen if a.fault)),
                       "max_in_flight": max((a.in_flight for a in seen), default=0),
                       "answered_s_max": max((round(a.t1 - a.t0, 2) for a in seen if a.status == 200), default=0),
                       "client_gave_up": sum(a.fault is None and a.status is None for a in seen)}
    return {"runs": runs, "seconds": s.seconds, "synth_roles": s.saved["synth"]["calls"],
            "judge_calls": s.saved["judge"]["calls"]}


def _wire(body: dict) -> str:
    """A request as the disk cache keys it (messages and sampling settings; not the model name)."""
    return json.dumps({k: body[k] for k in ("messages", "max_tokens", "temperature", "seed")}, sort_keys=True)


def _failed(a) -> bool:
    return a.fault is not None or a.status != 200


def _answer(a) -> str:
    return a.reply["choices"][0]["message"]["content"] or ""


@pytest.mark.parametrize("label", ["synth", "judge"])
def test_counters_add_up_against_what_the_proxy_saw(scenario, label):
    p = scenario.proxy
    c = scenario.saved[label]["calls"]  # the run record's counters
    work = (scenario.saved["synth"]["metrics"]["roles"]["total"] if label == "synth"
            else scenario.saved["judge"]["metrics"]["judge_calls"])
    assert work == {k: c[k] for k in work}  # metrics.json: the same calls, unparseable and refusals
    seen = p.attempts(label)
    bodies = {a.body_sha for a in seen}
    faults = Counter(a.fault for a in seen if a.fault)
    assert c["failures"] == 0 and sum(faults.values()) > 0
    assert c["requests"] == len(seen)  # every attempt the client counted reached the proxy, and no other
    assert c["requests"] - c["retries"] == len(bodies)  # distinct uncached requests
    assert c["retries"] == sum(_failed(a) for a in seen)  # one retry per failed attempt, none without one
    assert c["calls"] == c["cache_hits"] + c["requests"] - c["retries"]
    ok = Counter(a.body_sha for a in seen if not _failed(a))
    assert set(ok) == bodies and max(ok.values()) == 1  # each request answered exactly once


def test_every_kind_of_fault_was_injected_and_survived(scenario):
    faults = Counter(a.fault for label in ("synth", "judge") for a in scenario.proxy.attempts(label) if a.fault)
    assert set(faults) == set(faultproxy.FAULTS), faults


@pytest.mark.parametrize("label", ["synth", "judge"])
def test_every_answer_relayed_is_the_one_cached_under_its_request(scenario, label):
    cache = {}
    for f in (scenario.repo / ".cache/alignpipe/llm").glob("*/*.json"):
        blob = json.loads(f.read_text())
        cache[json.dumps(blob["request"], sort_keys=True)] = blob["completion"]["text"]
    relayed = {_wire(a.body): _answer(a) for a in scenario.proxy.attempts(label) if not _failed(a)}
    assert relayed and all(cache.get(k) == v for k, v in relayed.items())  # no answer lost or filed under another


def test_outputs_have_the_expected_rows_and_no_duplicates(scenario):
    s = scenario
    m = s.saved["synth"]["metrics"]
    webr, meta, sft = (s.jsonl(f"data/synthesize/{f}.jsonl") for f in ("webr", "webr_meta", "sft_webr"))
    assert len(webr) == len(meta) == len(sft) == m["rows"]
    assert len({r["prompt_id"] for r in webr}) == len(webr)
    lion = s.jsonl("data/synthesize/lion.jsonl")
    final = s.jsonl("data/synthesize/lion/round_1/final/teacher.jsonl")
    assert len(lion) == m["lion"]["rows"] == sum(r["answer"] is not None for r in final) > 0
    assert len({r["prompt_id"] for r in lion}) == len(lion) and len({r["id"] for r in final}) == len(final)

    gens = [json.loads(line) for line in s.saved["judge"]["generations"].decode().splitlines()]
    levels = {1, 2, 3}
    expected = [r["id"] for r in s.jsonl("data/world/eval.jsonl") if r["level"] in levels]
    assert sorted(g["id"] for g in gens) == sorted(expected) and len(set(expected)) == len(expected)
    jm = s.saved["judge"]["metrics"]
    assert jm["judge_calls"]["calls"] == len(gens)
    assert jm["judge_unparseable"] == sum(g["judge"] is None for g in gens)
    relayed = {_answer(a) for a in s.proxy.attempts("judge") if not _failed(a)}
    assert {g["judge_raw"] for g in gens} == relayed  # every judged row holds an answer the server gave


def test_a_rerun_answers_everything_from_the_cache_and_sends_nothing(scenario):
    s = scenario
    assert s.proxy.attempts("rerun") == []
    first, again = s.saved["synth"]["metrics"], s.read("data/synthesize/metrics.json")
    assert again == first  # the work counters are the artifact's: the same after a rerun from the cache
    lion_calls = sum(r["total"]["calls"] for r in first["lion"]["roles_by_round"].values())
    webr_calls = first["roles"]["total"]["calls"] - lion_calls  # Lion's finished phases are reused, not re-asked
    t = s.run_roles("synthesize")
    assert (t["requests"], t["retries"], t["cache_hits"], t["calls"]) == (0, 0, webr_calls, webr_calls) != (0,) * 4
    assert (s.repo / "data/synthesize/webr.jsonl").read_bytes() == s.saved["synth"]["webr"]
    j1, j2 = s.saved["judge"]["calls"], s.run_roles("evaluate@base")
    assert (j2["requests"], j2["cache_hits"]) == (0, j1["calls"]) and j1["requests"] - j1["retries"] > 0
    assert s.read("data/evaluate/base/metrics.json") == s.saved["judge"]["metrics"]
    assert (s.repo / "data/evaluate/base/generations.jsonl").read_bytes() == s.saved["judge"]["generations"]


def test_concurrency_reached_more_than_one_and_never_exceeded_the_bound(scenario):
    p = scenario.proxy
    for label in ("synth", "judge"):
        peak = max(a.in_flight for a in p.attempts(label))
        assert 1 < peak <= CONCURRENCY, (label, peak)
    assert max(a.in_flight for a in p.attempts("outage")) <= CONCURRENCY  # (instant 500s rarely overlap)


def test_an_outage_is_reported_in_bounded_time_not_hung(scenario):
    s = scenario
    proc, seen = s.procs["outage"], s.proxy.attempts("outage")
    assert proc.returncode != 0 and not s.saved["outage_output"]  # failed, and no output that looks complete
    assert (f"error in stage 'evaluate': role 'judge' (openai model '{s.model}' at {s.proxy.url}/v1): gave up after "
            f"{RETRIES + 1} attempts; last error: InternalServerError: Error code: 500 - upstream failure; "
            "request_headers:") in proc.stderr
    per_body = Counter(a.body_sha for a in seen)
    assert all(a.fault == "echo500" for a in seen) and max(per_body.values()) == RETRIES + 1
    assert s.seconds["outage"] < 120


def _scan(root: Path, needles: list[bytes]) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and ".git" not in path.relative_to(root).parts:
            data = path.read_bytes()
            hits += [f"{path.relative_to(root)}: {n[:24]!r}" for n in needles if n in data]
    return hits


def test_the_key_was_used_and_is_written_nowhere(scenario):
    s = scenario
    seen = [a for a in s.proxy.records if a.path == CHAT]
    assert seen and all(a.authorization == f"Bearer {s.canary}" for a in seen)  # it was sent, every time
    echoed = [a for a in seen if a.fault == "echo500"]
    assert echoed  # ... and the server echoed it back, into errors the client logged and raised
    needles = [s.canary.encode(), base64.b64encode(s.canary.encode()), s.canary[-16:].encode()]
    for rel in ("data", ".dvc", ".prefect", ".cache", "dvc.lock", ".prefect/prefect.db"):
        assert (s.repo / rel).exists(), f"{rel} missing: the scan would prove nothing"
    assert _scan(s.repo, needles) == []
    for label, proc in s.procs.items():
        for stream in (proc.stdout, proc.stderr):
            assert not any(n.decode() in stream for n in needles), label
    out = "".join(p.stdout + p.stderr for p in s.procs.values())
    assert "[redacted]" in out and "retry 1/" in out  # the echoed headers were logged, with the key redacted
    assert b"[redacted]" in (s.repo / ".prefect/prefect.db").read_bytes() or any(
        b"[redacted]" in f.read_bytes() for f in (s.repo / ".prefect").glob("prefect.db*"))
