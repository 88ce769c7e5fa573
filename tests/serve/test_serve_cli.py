"""`knowlm serve` as a user runs it: a real process, a request, SIGTERM, a clean exit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

KNOWLM = [sys.executable, "-m", "knowlm"]


def test_parse_adapters():
    from knowlm.errors import KnowlmError
    from knowlm.serve import parse_adapters

    assert parse_adapters(["ie=out/lora", "out/other/"]) == {"ie": "out/lora", "other": "out/other/"}
    for bad in (["=x"], ["a=x", "a=y"]):
        with pytest.raises(KnowlmError):
            parse_adapters(bad)


def test_bad_flags_exit_2(cli, tiny_model_dir):
    for args in (["serve", "-m", tiny_model_dir, "--adapter", "ie=/no/such/dir"], ["serve", "-m", "/no/such/model"],
                 ["serve", "-m", tiny_model_dir, "--port", "0"], ["webui", "-m", tiny_model_dir, "--port", "70000"]):
        result = cli(*args)
        assert result.exit_code == 2, args
        assert result.stderr.splitlines()[-1].startswith("error:") and "Traceback" not in result.stderr


@pytest.mark.slow
def test_serve_process_answers_and_stops_on_sigterm(tiny_model_dir, tmp_path):
    from knowlm.utils.net import free_port

    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "KNOWLM_API_KEY": "k"}
    proc = subprocess.Popen(
        KNOWLM + ["serve", "-m", str(tiny_model_dir), "--port", str(port), "--threads", "1", "--max-tokens", "16", "--graceful-timeout", "5"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
            assert proc.poll() is None, proc.stdout.read()
        reply = httpx.post(f"{url}/generate", json={"instruction": "hi", "parameters": {"max_tokens": 4}}, headers={"Authorization": "Bearer k"}, timeout=30)
        assert reply.status_code == 200 and reply.json()["num_output_tokens_cf"] <= 4
        assert httpx.post(f"{url}/generate", json={"instruction": "hi"}, timeout=30).status_code == 401  # key from KNOWLM_API_KEY
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    assert "Serving model" in output and "POST /generate 200" in output and "Server stopped." in output
