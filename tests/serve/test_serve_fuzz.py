"""schemathesis over /openapi.json of the live server: whatever it sends, no 5xx."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_openapi_fuzzing_finds_no_server_errors(live_server):
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import not_a_server_error

    url, _ = live_server
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    paths = {op.path for op in operations}
    assert {"/generate", "/v1/completions", "/v1/chat/completions", "/extract", "/v1/models"} <= paths
    calls = []
    for operation in operations:

        @settings(max_examples=10, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck), database=None)
        @given(case=operation.as_strategy())
        def run(case):
            response = case.call_and_validate(checks=[not_a_server_error], timeout=60)
            calls.append((operation.path, response.status_code))

        run()
    assert len(calls) >= 3 * len(operations)
    assert all(status < 500 for _, status in calls)
    assert {path for path, status in calls if status == 200} >= {"/generate", "/v1/models"}
