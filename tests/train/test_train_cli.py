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


@pytest.fixture
def captured(monkeypatch) -> dict:
    """Replace the recipes by a stub that records the config the CLI built."""
    import knowlm.train as train
    import knowlm.train.pref as pref

    seen: dict = {}

    def run(cfg, quiet=False):
        seen["cfg"] = cfg
        return {"stopped_early": True, "steps": 0}

    for module, name in ((train, "pretrain"), (train, "sft"), (pref, "preference")):
        monkeypatch.setattr(module, name, run)
    return seen


def test_every_config_field_is_a_flag_of_its_recipe(cli):
    import dataclasses

    from knowlm.train.config import PreferenceConfig, PretrainConfig, SFTConfig, TrainConfig

    for sub, cls in (("pretrain", PretrainConfig), ("sft", SFTConfig), ("dpo", PreferenceConfig), ("orpo", PreferenceConfig)):
        out = cli("train", sub, "--help").stdout
        for f in dataclasses.fields(cls):
            assert "--" + f.name.replace("_", "-") in out, (sub, f.name)
        for shortcut in ("--lora", "--qlora", "--full", "--config"):
            assert shortcut in out
    shared = {f.name for f in dataclasses.fields(TrainConfig)}
    assert "min_lr_ratio" in shared  # sft lacked --min-lr-ratio before the options were generated


@pytest.mark.parametrize("sub", ["pretrain", "sft", "dpo"])
@pytest.mark.parametrize("flags", [["--lora", "--full"], ["--method", "full", "--qlora"]])
def test_conflicting_methods_are_refused_by_every_recipe(cli, captured, sub, flags):
    result = cli("train", sub, "--model", "m", "--data", "d", "--output", "o", *flags)
    assert result.exit_code == 2 and "choose one of --lora, --qlora, --full" in result.stderr and "cfg" not in captured


def test_preset_then_flags_and_unknown_yaml_keys(cli, captured, tmp_path):
    result = cli("train", "sft", "--model", "m", "--data", "d", "--output", "o", "--config", "sft_oneke",
                 "--min-lr-ratio", "0.2", "--lora-r", "4", "--lora-target-modules", "q_proj,v_proj", "--full")
    assert result.exit_code == 0, result.stderr
    cfg = captured["cfg"]
    assert (cfg.template, cfg.lora_r, cfg.min_lr_ratio, cfg.method) == ("llama2", 4, 0.2, "full")
    assert cfg.lora_target_modules == ["q_proj", "v_proj"]
    cli("train", "pretrain", "--model", "m", "--data", "0.7", "a", "0.3", "b", "--output", "o", "--lora")
    assert captured["cfg"].data == ["0.7", "a", "0.3", "b"] and captured["cfg"].method == "lora"
    cli("train", "orpo", "--model", "m", "--data", "p.jsonl", "--output", "o", "--beta", "0.2")
    assert (captured["cfg"].objective, captured["cfg"].beta) == ("orpo", 0.2)
    bad = tmp_path / "bad.yaml"
    bad.write_text("learnin_rate: 0.1\nlora_r: 4\n", encoding="utf-8")
    result = cli("train", "sft", "--model", "m", "--data", "d", "--output", "o", "--config", bad)
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "learnin_rate (did you mean learning_rate?)" in result.stderr and "valid options:" in result.stderr
    assert "min_lr_ratio" in result.stderr
