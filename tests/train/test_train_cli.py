"""`knowlm train` from the command line: a run killed with SIGKILL resumes to the same result;
user errors exit 2 with one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from knowlm.train import PretrainConfig, pretrain

KNOWLM = [sys.executable, "-m", "knowlm"]


def _env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}


def _pretrain_args(model, data, out, *extra) -> list[str]:
    return [*KNOWLM, "train", "pretrain", "--model", str(model), "--data", data, "--output", str(out),
            "--seq-len", "32", "--batch-size", "2", "--max-steps", "120", "--lr", "2e-3", "--save-steps", "4",
            "--logging-steps", "4", "--strategy", "single", *extra]


@pytest.mark.slow
def test_kill_9_then_resume_matches_uninterrupted(tiny_model_dir, corpus_prefix, tmp_path):
    out = tmp_path / "killed"
    proc = subprocess.Popen(_pretrain_args(tiny_model_dir, corpus_prefix, out), env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if list((out / "checkpoints").glob("step-*/trainer_state.json")):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "knowlm.json").exists()
    done = subprocess.run(_pretrain_args(tiny_model_dir, corpus_prefix, out, "--resume"), env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Resumed from" in done.stdout
    resumed = json.loads((out / "train_summary.json").read_text())
    assert resumed["resumed_from"] and resumed["steps"] == 120
    straight = pretrain(PretrainConfig(model=str(tiny_model_dir), data=[corpus_prefix], output=str(tmp_path / "straight"),
                                       seq_len=32, micro_batch_size=2, max_steps=120, learning_rate=2e-3, save_steps=0,
                                       logging_steps=4, strategy="single"), quiet=True)
    assert resumed["final_loss"] == pytest.approx(straight["final_loss"], rel=1e-4)
    assert resumed["tokens"] == straight["tokens"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["sft", "--data", "missing.jsonl"], "data file not found"),
        (["sft", "--data", "{sft}", "--template", "vicuna"], "unknown prompt template"),
        (["sft", "--data", "{sft}", "--qlora"], "CUDA"),
        (["pretrain", "--data", "0.5", "nowhere"], "indexed dataset"),
        (["sft", "--data", "{sft}", "--lora", "--full"], "choose one of"),
    ],
)
def test_user_errors_exit_2_with_one_line(cli, tiny_model_dir, sft_file, tmp_path, args, message):
    if "--qlora" in args:
        import torch

        if torch.cuda.is_available():
            pytest.skip("has CUDA")
    args = [a.replace("{sft}", sft_file) for a in args]
    result = cli("train", args[0], "--model", tiny_model_dir, "--output", tmp_path / "o", *args[1:])
    last = result.stderr.splitlines()[-1]
    assert result.exit_code == 2 and last.startswith("error: ") and message in last, result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "o" / "knowlm.json").exists()


def test_main_exit_code_and_help(cli):
    bad = cli("train", "sft", "--model", "nowhere-model", "--data", "x.jsonl", "--output", "o")
    assert (bad.exit_code, bad.stderr) == (2, "error: model directory not found: nowhere-model\n")
    for sub in ("pretrain", "sft"):
        result = cli("train", sub, "--help")
        assert result.exit_code == 0 and "Example:" in result.stdout
