"""``/v1/schema`` and ``/v1/docs`` describe the real views (SPEC 6.4)."""

import io

import pytest
import yaml
from django.core.management import call_command
from django.test import Client

from analytics.filters import PARAMETERS


@pytest.fixture
def schema(db: None) -> dict:
    response = Client().get("/v1/schema", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    return yaml.safe_load(response.content)


def test_the_schema_is_valid_openapi_without_warnings(db: None) -> None:
    out = io.StringIO()
    call_command("spectacular", "--validate", "--fail-on-warn", stdout=out)
    assert yaml.safe_load(out.getvalue())["openapi"].startswith("3.")


def test_every_analytics_parameter_is_described(schema: dict) -> None:
    operation = schema["paths"]["/v1/analytics/taps"]["get"]
    described = {p["name"]: p for p in operation["parameters"] if p["in"] == "query"}
    assert set(described) == set(PARAMETERS)
    assert described["start"]["required"] and described["end"]["required"]
    assert all(p.get("description") for p in described.values())
    assert set(operation["responses"]) >= {"200", "400", "401", "403", "429"}
    assert set(operation["responses"]["200"]["content"]) == {"application/json", "text/csv"}
    headers = operation["responses"]["200"]["headers"]
    assert set(headers) >= {"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"}


def test_the_seed_endpoint_and_usage_are_described(schema: dict) -> None:
    seed = schema["paths"]["/v1/api/tap/analytics"]["post"]
    assert set(seed["responses"]) >= {"200", "400", "401", "413", "415", "429"}
    body = seed["requestBody"]["content"]["application/json"]["schema"]["$ref"].split("/")[-1]
    assert set(schema["components"]["schemas"][body]["properties"]) == {
        "startDate",
        "endDate",
        "interval",
        "tz",
    }
    assert "/v1/usage" in schema["paths"]


def test_the_api_key_scheme_is_declared_and_required(schema: dict) -> None:
    scheme = schema["components"]["securitySchemes"]["TeamApiKey"]
    assert scheme == {
        "type": "apiKey",
        "in": "header",
        "name": "X-Api-Key",
        "description": scheme["description"],
    }
    assert schema["paths"]["/v1/analytics/taps"]["get"]["security"] == [{"TeamApiKey": []}]


def test_swagger_ui_is_served_from_the_project_not_a_cdn(db: None) -> None:
    response = Client().get("/v1/docs")
    assert response.status_code == 200
    page = response.content.decode()
    assert "swagger-ui" in page and "/v1/schema" in page
    assert "cdn" not in page.lower()


@pytest.mark.parametrize("query", ["version=%0d%0aSet-Cookie:%20x=1", "version=%00", "lang=%00"])
def test_the_schema_and_docs_ignore_their_version_and_lang(db: None, query: str) -> None:
    schema = Client().get(f"/v1/schema?{query}")
    docs = Client().get(f"/v1/docs?{query}")

    assert schema.status_code == docs.status_code == 200
    assert schema["Content-Disposition"] == 'inline; filename="Tap Analytics API.json"'
    assert b'"/v1/schema"' in docs.content
