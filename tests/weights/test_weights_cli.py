"""`knowlm weights ...` end to end in-process: summaries on success, one line and exit 2 on bad input."""

import pytest

from tests.weights.weights_helpers import leftovers, perturbed_copy


def test_diff_recover_export_via_cli(cli, tiny_model_dir, weights_target_dir, tmp_path):
    result = cli("weights", "diff", "--base", tiny_model_dir, "--target", weights_target_dir, "--output", tmp_path / "d")
    assert result.exit_code == 0 and "bit-exact" in result.stdout
    result = cli("weights", "recover", "--base", tiny_model_dir, "--diff", tmp_path / "d", "--output", tmp_path / "r")
    assert result.exit_code == 0 and "match the SHA-256" in result.stdout.replace("\n", " ")
    assert cli("weights", "export-gguf", "-m", tmp_path / "r", "-o", tmp_path / "r.gguf", "--type", "q8_0").exit_code == 0
    assert (tmp_path / "r.gguf").stat().st_size > 0
    assert cli("weights", "export-mindspore", "-m", tmp_path / "r", "-o", tmp_path / "r.ckpt").exit_code == 0

    wrong = perturbed_copy(tiny_model_dir, tmp_path / "wrong", scale=0.01, seed=9, tiny_values=False)
    result = cli("weights", "recover", "--base", wrong, "--diff", tmp_path / "d", "--output", tmp_path / "r2")
    err = result.stderr.strip()
    assert result.exit_code == 2 and err.startswith("error: tensor ") and "\n" not in err
    assert not (tmp_path / "r2").exists() and leftovers(tmp_path) == []
    result = cli("weights", "merge-lora", "--base", tiny_model_dir, "--adapter", tmp_path / "nope", "--output", tmp_path / "m")
    assert result.exit_code == 2 and "adapter_config.json" in result.stderr


def _big_base_and_adapter(root, layers=96, width=512):
    """~100 MB of plain q_proj weights and a LoRA adapter on all of them: a merge that takes a few seconds."""
    import json

    import torch
    from safetensors.torch import save_file

    base, adapter = root / "base", root / "adapter"
    base.mkdir(), adapter.mkdir()
    gen = torch.Generator().manual_seed(0)
    names = [f"model.layers.{i}.self_attn.q_proj" for i in range(layers)]
    save_file({f"{n}.weight": torch.randn(width, width, generator=gen) for n in names}, str(base / "model.safetensors"))
    (base / "config.json").write_text(json.dumps({"model_type": "llama"}))
    lora = {}
    for n in names:
        lora[f"base_model.model.{n}.lora_A.weight"] = torch.randn(4, width, generator=gen)
        lora[f"base_model.model.{n}.lora_B.weight"] = torch.randn(width, 4, generator=gen)
    save_file(lora, str(adapter / "adapter_model.safetensors"))
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8}))
    return base, adapter


@pytest.mark.slow
def test_sigterm_mid_merge_removes_temporary_output_and_exits_143(tmp_path):
    """A real `knowlm` process, frozen (SIGSTOP) while its .tmp- output exists, then sent SIGTERM."""
    import os
    import signal
    import subprocess
    import sys
    import time

    base, adapter = _big_base_and_adapter(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "knowlm", "weights", "merge-lora", "--base", str(base), "--adapter", str(adapter),
                             "--output", str(out / "merged")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    caught = False
    while proc.poll() is None and time.monotonic() < deadline:
        tmp = [p for p in out.iterdir() if p.name.startswith(".tmp-merged")]
        if tmp and any(tmp[0].iterdir()):  # a partial shard is on disk: mid-merge
            os.kill(proc.pid, signal.SIGSTOP)
            caught = tmp[0].exists()  # still there once frozen (not renamed into place in between)
            os.kill(proc.pid, signal.SIGTERM)
            os.kill(proc.pid, signal.SIGCONT)
            break
        time.sleep(0.005)
    _, err = proc.communicate(timeout=60)
    assert caught, "the merge finished before it could be interrupted"
    assert proc.returncode == 143, err[-2000:]
    assert "terminated" in err and "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == []  # no .tmp-*, no half-written output
