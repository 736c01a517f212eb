"""``POST /v1/api/tap/analytics``: the seed service's own request and envelope (SPEC 6.2)."""

import json

import pytest
from django.test import Client

from teams.keys import IssuedKey
from teams.models import Tag
from tests.conftest import add_taps

URL = "/v1/api/tap/analytics"
SEED_BODY = '{"startDate":"2023-01-01","endDate":"2023-12-22","interval":"week"}'


@pytest.fixture
def client() -> Client:
    return Client()


def post(
    client: Client, key: IssuedKey, body: str, content_type: str = "application/json"
) -> object:
    # The seed's documented request: curl -X POST -H 'x-api-key: KEY'
    # -H 'Content-Type: application/json' -d '{...}' .../v1/api/tap/analytics
    return client.post(URL, body, content_type=content_type, HTTP_X_API_KEY=key.plaintext)


def test_the_seeds_documented_request_works_unchanged(
    client: Client, read_key: IssuedKey, tag: Tag
) -> None:
    add_taps(
        (1, tag.uid, 2, "2023-01-01T10:00:00Z"),  # a Sunday: the week of 2022-12-26
        (2, tag.uid, 3, "2023-01-03T10:00:00Z"),
        (3, tag.uid, 4, "2023-01-04T10:00:00Z"),
        (4, tag.uid, 5, "2023-12-22T23:59:59Z"),  # the end date counts, whole
        (5, tag.uid, 6, "2023-12-23T00:00:00Z"),
    )
    response = post(client, read_key, SEED_BODY)
    assert response.status_code == 200
    assert response.json() == {
        "message": "Successful",
        "data": [
            {"period": "2022-12-26T00:00:00+00:00", "total_count": 2},
            {"period": "2023-01-02T00:00:00+00:00", "total_count": 7},
            {"period": "2023-12-18T00:00:00+00:00", "total_count": 5},
        ],
    }


def test_tz_in_the_body_moves_the_boundaries(client: Client, read_key: IssuedKey, tag: Tag) -> None:
    add_taps((1, tag.uid, 2, "2023-01-01T23:30:00Z"))
    body = '{"startDate":"2023-01-02","endDate":"2023-01-02","interval":"day","tz":"Europe/Paris"}'
    assert post(client, read_key, body).json()["data"] == [
        {"period": "2023-01-02T00:00:00+01:00", "total_count": 2}
    ]


def test_unknown_body_fields_are_ignored_as_the_seed_did(
    client: Client, read_key: IssuedKey
) -> None:
    body = '{"startDate":"2023-01-01","endDate":"2023-01-02","interval":"day","team":7}'
    assert post(client, read_key, body).status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"startDate":"2024-02-30","endDate":"2024-03-01","interval":"day"}', "startDate"),
        ('{"startDate":"2024-02-01","endDate":"2024-13-01","interval":"day"}', "endDate"),
        ('{"startDate":"2024-02-01","endDate":"2024-01-01","interval":"day"}', "endDate"),
        ('{"startDate":"2024-02-01","endDate":"2024-03-01","interval":"fortnight"}', "interval"),
        ('{"endDate":"2024-03-01","interval":"day"}', "startDate"),
        ('{"startDate":20240201,"endDate":"2024-03-01"}', "startDate"),
        ('{"startDate":"2024-02-01","endDate":"2024-03-01","tz":"Nowhere/Else"}', "tz"),
        ('["startDate"]', "non_field_errors"),
    ],
)
def test_bad_bodies_get_400_naming_the_field(
    client: Client, read_key: IssuedKey, body: str, field: str
) -> None:
    response = post(client, read_key, body)
    assert response.status_code == 400
    assert field in response.json()


def test_a_body_that_is_not_json_is_415(client: Client, read_key: IssuedKey) -> None:
    response = post(client, read_key, "startDate=2023-01-01", "application/x-www-form-urlencoded")
    assert response.status_code == 415
    assert "detail" in response.json()


def test_a_body_over_1_mib_is_413(client: Client, read_key: IssuedKey) -> None:
    padding = "x" * (1024 * 1024)
    body = json.dumps({"startDate": "2023-01-01", "endDate": "2023-01-02", "pad": padding})
    response = post(client, read_key, body)
    assert response.status_code == 413
    assert "1 MiB" in response.json()["detail"]


@pytest.mark.parametrize("body", ['{"startDate":', "[" * 100_000, '{"a": NaN}', "\udcff"])
def test_malformed_or_absurdly_nested_json_is_400(
    client: Client, read_key: IssuedKey, body: str
) -> None:
    response = post(client, read_key, body.encode("utf-8", "surrogateescape"))
    assert response.status_code == 400
    assert "detail" in response.json()


def test_an_empty_body_names_the_missing_fields(client: Client, read_key: IssuedKey) -> None:
    response = post(client, read_key, "")
    assert response.status_code == 400
    assert response.json()["startDate"] == ["Give startDate, a date such as 2023-01-01."]


def test_without_a_key_it_is_401(client: Client) -> None:
    response = client.post(URL, SEED_BODY, content_type="application/json")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Api-Key"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("interval", '"fortnight"', '"fortnight" is not a valid interval; use one of minute, '),
        ("interval", '"Week"', '"Week" is not a valid interval; use one of minute, '),
        ("interval", "null", "interval may not be null; use one of minute, "),
        ("tz", "null", "tz may not be null; give an IANA time zone such as Europe/Paris"),
        ("tz", '""', "tz may not be empty; give an IANA time zone such as Europe/Paris"),
    ],
)
def test_a_bad_interval_or_zone_says_what_to_give(
    client: Client, read_key: IssuedKey, field: str, value: str, message: str
) -> None:
    body = f'{{"startDate":"2024-01-01","endDate":"2024-01-02","{field}":{value}}}'

    response = post(client, read_key, body)

    assert response.status_code == 400
    assert response.json()[field][0].startswith(message)
