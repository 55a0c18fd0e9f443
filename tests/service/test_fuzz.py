"""Schemathesis against the service's own OpenAPI document: no 5xx, no reply that breaks
the documented schema or content type, on every operation (60 examples each)."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

pytestmark = pytest.mark.integration

CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]


def test_every_operation_survives_fuzzing(server):
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    operations = [r.ok() for r in schema.get_all_operations()]
    assert len(operations) >= 15, [f"{o.method} {o.path}" for o in operations]
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def fuzz(case) -> None:
            case.call_and_validate(checks=CHECKS)

        try:
            fuzz()
        except Exception as e:
            raise AssertionError(f"{operation.method.upper()} {operation.path}: {e}") from e
