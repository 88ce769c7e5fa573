"""The README tour as a test: every README command and --help example on a fresh demo, with no traceback and no
library warning on stderr. About 8 minutes on 2 cores (the demo included), so opt-in: KNOWLM_OPTIN=1."""

import pytest


@pytest.mark.slow
@pytest.mark.optin
def test_every_readme_command_and_help_example_runs_cleanly(tmp_path):
    from tour.readme_tour import tour

    outcomes = tour(base=tmp_path)
    bad = [f"{o.step.line}: {o.problems} {o.stderr.strip()[-500:]}" for o in outcomes if o.problems]
    assert len(outcomes) > 40 and not bad, "\n".join(bad)
