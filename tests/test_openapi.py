"""docs/openapi.json is generated from the handlers, current, true to what they
answer, and schemathesis finds no 5xx and no reply outside it through the local
gateway. SCHEMATHESIS_EXAMPLES (default 100 per operation) sets the effort."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
import schemathesis
from conftest import REPO, SAMPLE_TOKEN, embedded_postgres, use_backend
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from local import database, gateway, openapi

DOCUMENT = json.loads(openapi.DOCUMENT.read_text())


def test_openapi_document_is_up_to_date_with_the_handlers_and_events() -> None:
    with embedded_postgres() as server:
        database.migrate(server.get_uri())
        fresh = openapi.render(openapi.build(server.get_uri()))

    assert fresh == openapi.DOCUMENT.read_text(), "docs/openapi.json is stale: run `make docs`"


def test_template_routes_are_exactly_the_routes_the_handlers_serve() -> None:
    routes = [r for r in gateway.load_routes(REPO / "template.yaml") if r.path and not openapi.is_webhook(r)]
    served = set()
    for route in routes:
        gateway.load_handler(route)
        resolver = openapi._resolver_of(route)
        served |= {
            (path, method.upper())
            for path, item in resolver.get_openapi_schema().paths.items()
            for method in ("get", "post", "put", "patch", "delete")
            if getattr(item, method)
        }
    assert served == {(r.path, "POST") for r in routes}
    assert {r.method for r in routes} == {"ANY"}  # so other methods reach the handler and get 405
    assert set(DOCUMENT["paths"]) == {r.path for r in routes}


def examples() -> Iterator[tuple[str, str, str, Any]]:
    for path, item in DOCUMENT["paths"].items():
        for status, response in item["post"]["responses"].items():
            content = response["content"]["application/json"]
            for name, example in content.get("examples", {}).items():
                yield path, status, name, (content["schema"], example["value"])


@pytest.mark.parametrize(("path", "status", "name", "case"), list(examples()), ids=lambda v: str(v)[:40])
def test_every_recorded_reply_matches_its_documented_schema(path: str, status: str, name: str, case: Any) -> None:
    schema, value = case
    resolver = jsonschema.RefResolver.from_schema(DOCUMENT)
    jsonschema.validate(value, schema, resolver=resolver)


def test_every_endpoint_documents_examples_for_success_and_every_error() -> None:
    for item in DOCUMENT["paths"].values():
        responses = item["post"]["responses"]
        assert set(responses) == {"200", "202", "400", "401", "404", "405", "413", "415", "500", "503"}
        assert all(r["content"]["application/json"].get("examples") for r in responses.values())
        assert item["post"]["requestBody"]["content"]["application/json"]["examples"]


# ---------------------------------------------------------------------------
# schemathesis against the local gateway
# ---------------------------------------------------------------------------

schema = schemathesis.openapi.from_path(openapi.DOCUMENT)


@pytest.fixture(scope="module")
def live_gateway(database_url: str) -> Iterator[str]:
    with pytest.MonkeyPatch.context() as patch:
        use_backend(patch, {"DATABASE_URL": database_url})
        server = gateway.make_server(gateway.load_routes(REPO / "template.yaml"), port=0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        yield f"http://127.0.0.1:{server.server_address[1]}"
        server.shutdown()
        server.server_close()


@schema.parametrize()
@settings(
    max_examples=int(os.environ.get("SCHEMATHESIS_EXAMPLES", "100")),
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_no_5xx_and_no_reply_outside_the_schema(case: schemathesis.Case, live_gateway: str) -> None:
    # Not positive_data_acceptance: the service is stricter than a JSON schema can
    # say (a phone number's digit count, a timestamp's formats), and answers 400.
    case.call_and_validate(
        base_url=live_gateway,
        headers={"Authorization": f"Bearer {SAMPLE_TOKEN}"},
        excluded_checks=[positive_data_acceptance],
    )
