"""A stage whose LLM server is down exits non-zero with one line naming the role and the server.

Bad params, data files and model paths: the table in tests/reliability/test_bad_inputs.py (real CLI runs)."""

import subprocess
import sys


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
