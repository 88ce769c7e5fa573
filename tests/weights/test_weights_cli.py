"""`knowlm weights ...` end to end in-process: summaries on success, one line and exit 2 on bad input."""

import pytest

from knowlm.cli.main import main
from tests.weights.weights_helpers import leftovers, perturbed_copy


def run(argv):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return exit_info.value.code


def test_diff_recover_export_via_cli(tiny_model_dir, weights_target_dir, tmp_path, capsys):
    assert run(["weights", "diff", "--base", str(tiny_model_dir), "--target", str(weights_target_dir), "--output", str(tmp_path / "d")]) == 0
    assert "bit-exact" in capsys.readouterr().out
    assert run(["weights", "recover", "--base", str(tiny_model_dir), "--diff", str(tmp_path / "d"), "--output", str(tmp_path / "r")]) == 0
    assert "match the SHA-256" in capsys.readouterr().out.replace("\n", " ")
    assert run(["weights", "export-gguf", "-m", str(tmp_path / "r"), "-o", str(tmp_path / "r.gguf"), "--type", "q8_0"]) == 0
    assert (tmp_path / "r.gguf").stat().st_size > 0
    assert run(["weights", "export-mindspore", "-m", str(tmp_path / "r"), "-o", str(tmp_path / "r.ckpt")]) == 0
    capsys.readouterr()

    wrong = perturbed_copy(tiny_model_dir, tmp_path / "wrong", scale=0.01, seed=9, tiny_values=False)
    assert run(["weights", "recover", "--base", str(wrong), "--diff", str(tmp_path / "d"), "--output", str(tmp_path / "r2")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: tensor ") and "\n" not in err
    assert not (tmp_path / "r2").exists() and leftovers(tmp_path) == []
    assert run(["weights", "merge-lora", "--base", str(tiny_model_dir), "--adapter", str(tmp_path / "nope"), "--output", str(tmp_path / "m")]) == 2
    assert "adapter_config.json" in capsys.readouterr().err
