"""schemathesis over /openapi.json of the live server: whatever it sends, no 5xx, every status and
content type documented, and bodies that break the documented schema are refused (400)."""

from __future__ import annotations

import time

import pytest


@pytest.mark.slow
def test_openapi_fuzzing_finds_no_server_errors_or_undocumented_answers(live_server):
    import schemathesis
    from schemathesis import GenerationMode
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import content_type_conformance, negative_data_rejection, not_a_server_error, status_code_conformance

    url, _ = live_server
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    # A schema-violating body is refused with 400, or with 413 when the fuzzer made it larger than the body limit.
    schema.config.checks.negative_data_rejection.expected_statuses = ["400", "413"]
    operations = [result.ok() for result in schema.get_all_operations()]
    paths = {op.path for op in operations}
    assert {"/generate", "/v1/completions", "/v1/chat/completions", "/extract", "/tokenize", "/detokenize", "/v1/models", "/version"} <= paths
    checks = [not_a_server_error, status_code_conformance, content_type_conformance]
    calls = []
    started = time.monotonic()
    for operation in operations:
        for mode, extra in ((GenerationMode.POSITIVE, []), (GenerationMode.NEGATIVE, [negative_data_rejection])):
            if mode is GenerationMode.NEGATIVE and operation.method.upper() != "POST":
                continue

            @settings(max_examples=8, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck), database=None)
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case):
                response = case.call_and_validate(checks=[*checks, *extra], timeout=60)
                calls.append((operation.path, mode, response.status_code))

            run()
    assert time.monotonic() - started < 240  # bounded: a fuzz run must not eat the suite's budget
    assert len(calls) >= 3 * len(operations)
    assert all(status < 500 for _, _, status in calls)
    assert {path for path, _, status in calls if status == 200} >= {"/generate", "/v1/models", "/tokenize", "/version"}
    assert all(status in (400, 413) for _, mode, status in calls if mode is GenerationMode.NEGATIVE and status != 404)
