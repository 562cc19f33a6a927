"""Fixtures for the LLM-role tests: scripted in-process backends, a tiny local model directory built from config
(a 2-layer Llama + the project's BPE tokenizer with its chat template), and a real `transformers serve` on
127.0.0.1 serving it (started once per module, stopped afterwards)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from alignpipe.llm.base import ChatRequest, Completion, LLMError, TransientError

CORPUS = [f"{n} has a {a} near the {b}. Describe {n}. Score of the Assistant 1: 7."
          for n in ("Velmora", "Quenth", "Arlis", "Dorvan") for a in ("harbor", "tower") for b in ("river", "market")]


class ScriptedBackend:
    """An in-process backend that answers ``script(request)``; optional transient failures and a delay.

    Not a stand-in for a client library: it exercises RoleClient's cache, retry and concurrency logic.
    """

    kind, remote, batched = "scripted", True, False

    def __init__(self, script=lambda r: f"echo {r.messages[-1]['content']}", fail_first: int = 0,
                 fatal_after: int | None = None, delay: float = 0.0):
        self.script, self.fail_first, self.fatal_after, self.delay = script, fail_first, fatal_after, delay
        self.calls = 0
        self.in_flight = self.max_in_flight = 0
        self._lock = threading.Lock()

    def identity(self):
        return {"kind": self.kind}

    def describe(self):
        return "scripted backend"

    def complete_one(self, request: ChatRequest, timeout: float | None = None) -> Completion:
        with self._lock:
            self.calls += 1
            n = self.calls
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            time.sleep(self.delay)
            if n <= self.fail_first:
                raise TransientError(f"HTTP 503 (attempt {n})")
            if self.fatal_after is not None and n > self.fatal_after:
                raise LLMError("HTTP 400: bad request")
            text = self.script(request)
            return Completion(text=text, prompt_tokens=len(str(request.messages).split()),
                              completion_tokens=len(text.split()))
        finally:
            with self._lock:
                self.in_flight -= 1


@pytest.fixture
def scripted():
    return ScriptedBackend


def build_tiny_model(directory: Path) -> Path:
    """A randomly initialised 2-layer Llama (seeded) with the project's tokenizer and chat template."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from alignpipe.config import TokenizerSection
    from alignpipe.models.tokenizer import train_tokenizer

    tok = train_tokenizer(CORPUS, TokenizerSection(vocab_size=300, min_frequency=1))
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                         tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llm") / "model")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(model_dir: Path, log_dir: Path):
    """`transformers serve <model_dir>` on 127.0.0.1:<free port>; yields (base_url, model name).

    Started as a subprocess of this Python (`python -m transformers.cli.transformers serve`), polled on /health
    for up to 120 s, and terminated (then killed if needed) on exit.
    """
    port = _free_port()
    log = log_dir / "serve.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "HF_HOME": str(log_dir / "hf")}
    cmd = [sys.executable, "-m", "transformers.cli.transformers", "serve", str(model_dir),
           "--host", "127.0.0.1", "--port", str(port), "--device", "cpu", "--log-level", "warning"]
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.time() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"transformers serve exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                pytest.fail(f"transformers serve not healthy after 120 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/v1", str(model_dir)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def openai_server(tiny_model_dir, tmp_path_factory):
    """`transformers serve <tiny model>` for the module's tests (see :func:`serve`)."""
    with serve(tiny_model_dir, tmp_path_factory.mktemp("serve")) as server:
        yield server
