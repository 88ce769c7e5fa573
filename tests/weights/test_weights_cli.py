"""`knowlm weights ...` end to end in-process: summaries on success, one line and exit 2 on bad input."""

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
