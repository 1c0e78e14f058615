"""Schemathesis drives every operation from the live schema: no 500s, no off-schema answers."""

import pytest
import schemathesis
from django.core import signals
from django.core.cache import cache
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from members import services as member_services
from rewards import services


@pytest.fixture
def api_schema(db, rules, store, member):
    cache.clear()
    _key, raw = member_services.api_key_create(store=store, name="Schemathesis", requests_per_minute=100_000)
    services.purchase_record(store=store, receipt_number="R-1", amount="42", member=member)
    # Like Django's test client: keep the test's connection (and transaction) across requests.
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    loaded = schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application())
    loaded.test_headers = {"Authorization": f"Api-Key {raw}"}
    yield loaded
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.mark.slow
def test_every_operation_conforms_to_the_schema(api_schema):
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 7
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def conforms(case: schemathesis.Case) -> None:
            # Valid-looking input is often refused by the programme's rules (422, 409): that is correct.
            case.call_and_validate(headers=api_schema.test_headers, excluded_checks=[positive_data_acceptance])

        conforms()
