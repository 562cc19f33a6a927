"""A stage run with bad params exits non-zero with one line naming the key, before Prefect starts."""

import subprocess
import sys


def test_bad_params_fail_fast_naming_the_key(tmp_path, repo_root):
    bad = tmp_path / "params.yaml"
    bad.write_text("seed: 1\nworld:\n  n_entitis: 3\n")
    proc = subprocess.run(
        [sys.executable, "-m", "flows.world", "--params", str(bad)],
        cwd=repo_root, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "unknown key 'world.n_entitis' (did you mean 'n_entities'?)" in proc.stderr
    assert "Beginning flow run" not in proc.stdout + proc.stderr  # no Prefect work was started


def test_missing_model_dir_names_the_path(tmp_path, repo_root):
    proc = subprocess.run(
        [sys.executable, "-m", "flows.evaluate", "--name", "x", "--model-dir", str(tmp_path / "nope"),
         "--world-dir", str(tmp_path / "world")],
        cwd=repo_root, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2
    assert str(tmp_path / "world") in proc.stderr or str(tmp_path / "nope") in proc.stderr


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
