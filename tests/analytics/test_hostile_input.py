"""Hostile input never yields a 500, and a bad parameter gets a 400 that names it."""

import gzip
from typing import Any
from urllib.parse import quote

import pytest
from django.test import Client
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from teams.keys import IssuedKey
from teams.models import Tag

URL = "/v1/analytics/taps"
GOOD = {"start": "2024-01-01", "end": "2024-01-31"}
PARAMETERS = (
    "start",
    "end",
    "interval",
    "tz",
    "tag",
    "group_by",
    "fill",
    "week_start",
    "compare",
    "limit",
    "format",
)
SQL = "1' OR '1'='1'; DROP TABLE analytics_tap;--"
UNICODE = "ü日本🎉\u202e\u0000x"


def query_string(**params: str) -> str:
    return "&".join(f"{quote(name)}={quote(value)}" for name, value in params.items())


# (query string, the parameter the 400 must name)
BAD_QUERIES = [
    *[(query_string(**{**GOOD, name: SQL}), name) for name in PARAMETERS],
    *[(query_string(**{**GOOD, name: UNICODE}), name) for name in PARAMETERS],
    (query_string(**{**GOOD, "start": "0000-01-01"}), "start"),
    (query_string(**{**GOOD, "end": "10000-01-01"}), "end"),
    (query_string(**{**GOOD, "start": "1899-12-31"}), "start"),
    (query_string(**{**GOOD, "end": "9999-12-31"}), "end"),
    (query_string(**{**GOOD, "start": "2024-02-30"}), "start"),
    (query_string(**{**GOOD, "start": "2023-02-29"}), "start"),
    (query_string(**{**GOOD, "start": "2024-01-01T25:00:00Z"}), "start"),
    (query_string(**{**GOOD, "start": "2024-01-01T10:00:00+25:00"}), "start"),
    (query_string(**{**GOOD, "start": "2024-01-01T10:00:00"}), "start"),
    (query_string(**{**GOOD, "start": "١٢٣٤-٠١-٠١"}), "start"),
    (query_string(**{**GOOD, "end": "2023-12-31"}), "end"),
    (query_string(**{**GOOD, "end": "2023-12-31T23:00:00Z"}), "end"),
    (query_string(**{**GOOD, "end": "x" * 100_000}), "end"),
    (query_string(start="2024-01-01"), "end"),
    (query_string(end="2024-01-01"), "start"),
    (query_string(**{**GOOD, "interval": "minute"}), "interval"),
    (query_string(start="1900-01-01", end="2999-12-31", interval="hour"), "interval"),
    (query_string(**{**GOOD, "interval": "DAY"}), "interval"),
    (query_string(**{**GOOD, "tz": "../../../../etc/passwd"}), "tz"),
    (query_string(**{**GOOD, "tz": "/usr/share/zoneinfo/UTC"}), "tz"),
    (query_string(**{**GOOD, "tz": "+05:30"}), "tz"),
    (query_string(**{**GOOD, "tag": "-1"}), "tag"),
    (query_string(**{**GOOD, "tag": "0"}), "tag"),
    (query_string(**{**GOOD, "tag": str(2**64)}), "tag"),
    (query_string(**{**GOOD, "tag": "1e9"}), "tag"),
    (query_string(**{**GOOD, "tag": "123"}), "tag"),
    (query_string(**{**GOOD, "group_by": "tag", "limit": "-5"}), "limit"),
    (query_string(**{**GOOD, "group_by": "tag", "limit": "1001"}), "limit"),
    (query_string(**{**GOOD, "group_by": "tag", "limit": "9" * 5000}), "limit"),
    (query_string(**{**GOOD, "limit": "10"}), "limit"),
    (query_string(**{**GOOD, "week_start": "sunday"}), "week_start"),
    (query_string(**{**GOOD, "compare": "year", "format": "csv"}), "compare"),
    (query_string(**GOOD) + "&interval=day&interval=week", "interval"),
    (query_string(**GOOD) + "&start=2024-01-02", "start"),
    (query_string(**GOOD) + "&intreval=week", "intreval"),
    (query_string(**GOOD) + "&" + quote(SQL) + "=1", SQL[:64]),
    # Empty, not absent: refused rather than read as the default.
    *[
        (query_string(**{**GOOD, name: ""}), name)
        for name in PARAMETERS
        if name not in ("start", "end", "limit")
    ],
    (query_string(**{**GOOD, "group_by": "tag", "limit": " "}), "limit"),
    # Django's field reads each of these as a number.
    *[
        (query_string(**{**GOOD, "group_by": "tag", "limit": limit}), "limit")
        for limit in ["1.0", " 1", "1_0", "\u0661\u0660", "+5"]
    ],
    (query_string(**{**GOOD, "start": ""}), "start"),
    # The host's own zone, which Debian lists beside the IANA names.
    (query_string(**{**GOOD, "tz": "localtime"}), "tz"),
    (query_string(**{**GOOD, "tz": "Factory"}), "tz"),
    (query_string(**{**GOOD, "tag": "9" * 5000}), "tag"),
]


@pytest.mark.parametrize(("query", "parameter"), BAD_QUERIES)
def test_a_bad_parameter_gets_a_400_naming_it(
    query: str, parameter: str, read_key: IssuedKey, tag: Tag
) -> None:
    response = Client().get(f"{URL}?{query}", HTTP_X_API_KEY=read_key.plaintext)
    assert response.status_code == 400, response.content[:300]
    assert response["Content-Type"] == "application/json"
    errors = response.json()
    assert parameter in errors, errors
    assert all(isinstance(message, str) and message for message in errors[parameter])


def test_there_are_at_least_30_hostile_queries() -> None:
    assert len(BAD_QUERIES) >= 30


MIB = 1024 * 1024
# (content type, body, expected status) for the seed-compatible POST
HOSTILE_BODIES = [
    (
        "application/json",
        b'{"startDate":"2023-01-01","endDate":"2023-01-02","x":"' + b"a" * 10 * MIB + b'"}',
        413,
    ),
    ("application/json", b"[" * (10 * MIB), 413),
    ("text/plain", b'{"startDate":"2023-01-01","endDate":"2023-01-02"}', 415),
    ("multipart/form-data; boundary=x", b"--x\r\n\r\n--x--", 415),
    ("application/xml", b"<a/>", 415),
    ("application/json", b"\xff\xfe\x00", 400),
    ("application/json", b"null", 400),
    ("application/json", b"12345678901234567890123456789", 400),
    ("application/json", b'{"startDate":"' + SQL.encode() + b'","endDate":"2023-01-02"}', 400),
    (
        "application/json",
        b'{"startDate":"2023-01-01","endDate":"2023-01-02","interval":["day"]}',
        400,
    ),
    ("application/json", b'{"startDate":{"$gt":""},"endDate":"2023-01-02"}', 400),
    (
        "application/json",
        b'{"startDate":"2023-01-01","endDate":"2023-01-02","tz":"' + "Ω".encode() * 50 + b'"}',
        400,
    ),
    ("application/json; charset=latin-99", b"{}", 400),
]


@pytest.mark.parametrize(("content_type", "body", "status"), HOSTILE_BODIES)
def test_hostile_bodies_get_a_clear_4xx(
    content_type: str, body: bytes, status: int, read_key: IssuedKey
) -> None:
    response = Client().generic(
        "POST",
        "/v1/api/tap/analytics",
        body,
        content_type=content_type,
        HTTP_X_API_KEY=read_key.plaintext,
    )
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"] == "application/json"


@pytest.mark.parametrize(
    "header",
    ["", " ", "a" * 10_000, SQL, "Ω.Ω", "x.y.z", "\t"],
)
def test_garbage_keys_get_401(header: str, tag: Tag) -> None:
    response = Client().get(f"{URL}?{query_string(**GOOD)}", HTTP_X_API_KEY=header)
    assert response.status_code == 401
    assert "detail" in response.json()


fuzzed_params = st.dictionaries(
    st.sampled_from([*PARAMETERS, "x", "start[]", ""]),
    st.one_of(
        st.text(max_size=40),
        st.from_regex(r"\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2})?([+-]\d{2}:?\d{2}|Z)?)?"),
        st.integers(min_value=-(2**70), max_value=2**70).map(str),
    ),
    max_size=6,
)


@hypothesis_settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(params=fuzzed_params)
def test_fuzzed_parameters_never_get_a_500(
    params: dict[str, str], read_key: IssuedKey, tag: Tag, settings: Any
) -> None:
    settings.TAPS_RATE_LIMIT = "100000/hour"
    response = Client().get(URL, params, HTTP_X_API_KEY=read_key.plaintext)
    assert response.status_code in (200, 400), response.content[:300]
    assert response["Content-Type"] in ("application/json", "text/csv; charset=utf-8")


def test_the_seed_post_refuses_the_hosts_zone(read_key: IssuedKey) -> None:
    body = {"startDate": "2024-01-01", "endDate": "2024-01-02", "tz": "localtime"}
    response = Client().post(
        "/v1/api/tap/analytics",
        body,
        content_type="application/json",
        HTTP_X_API_KEY=read_key.plaintext,
    )
    assert response.status_code == 400
    assert "tz" in response.json()


@pytest.mark.parametrize(
    ("method", "path", "key"),
    [
        ("post", "/v1/api/tap/analytics", "read"),
        ("get", "/v1/usage", "read"),
        ("get", "/v1/team", "read"),
        ("post", "/v1/taps", "ingest"),
        ("get", "/v1/schema", None),
        ("get", "/v1/docs", None),
        ("get", "/healthz", None),
    ],
)
def test_a_parameter_given_twice_is_refused_on_every_endpoint(
    method: str,
    path: str,
    key: str | None,
    read_key: IssuedKey,
    ingest_key: IssuedKey,
    tag: Tag,
) -> None:
    keys = {"read": read_key, "ingest": ingest_key}
    headers = {"HTTP_X_API_KEY": keys[key].plaintext} if key else {}
    body: Any = (
        [{"id": 1, "tag": tag.uid}]
        if path == "/v1/taps"
        else {"startDate": "2024-01-01", "endDate": "2024-01-02"}
    )

    def send(query: str) -> Any:
        if method == "get":
            return Client().get(f"{path}?{query}", **headers)
        return Client().post(f"{path}?{query}", body, content_type="application/json", **headers)

    once, twice = send("x=1"), send("x=1&x=2")
    assert once.status_code in (200, 201), once.content[:300]
    assert twice.status_code == 400, twice.content[:300]
    assert twice.json() == {"x": ["Give x once; it was given 2 times."]}


@pytest.mark.parametrize("path", ["/healthz", "/dashboard/", "/v1/docs", "/v1/schema"])
@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_pages_that_only_read_refuse_other_methods_in_json(method: str, path: str) -> None:
    # With CSRF checks on, as for a browser: a POST gets the 405, not a CSRF refusal.
    response = Client(enforce_csrf_checks=True).generic(method, path)

    assert response.status_code == 405, response.content[:300]
    assert response["Content-Type"] == "application/json"
    assert method in response.json()["detail"]
    assert "GET" in response["Allow"]


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/healthz", "/dashboard/", "/v1/docs", "/v1/schema"])
def test_pages_that_only_read_answer_head(path: str) -> None:
    assert Client().head(path).status_code == 200


@pytest.mark.django_db
def test_a_form_refused_for_csrf_gets_json() -> None:
    response = Client(enforce_csrf_checks=True).post(
        "/admin/login/", {"username": "a", "password": "b"}
    )

    assert response.status_code == 403
    assert response["Content-Type"] == "application/json"
    assert response.json()["detail"].startswith("CSRF verification failed: ")


@pytest.mark.parametrize(
    ("headers", "body", "status", "says"),
    [
        (
            {},
            b'{"startDate":"2023-01-01","startDate":"2023-02-01","endDate":"2023-03-01"}',
            400,
            '"startDate" twice',
        ),
        (
            {},
            b'{"startDate":"2023-01-01","endDate":"2023-01-02","x":' + b"9" * 5000 + b"}",
            400,
            "more than 4300 digits",
        ),
        (
            {"HTTP_CONTENT_ENCODING": "gzip"},
            gzip.compress(b'{"startDate":"2023-01-01"}'),
            415,
            "Content-Encoding 'gzip'",
        ),
        (
            {"HTTP_CONTENT_ENCODING": "br"},
            b'{"startDate":"2023-01-01","endDate":"2023-01-02"}',
            415,
            "uncompressed",
        ),
    ],
    ids=["repeated key", "huge number", "gzip", "labelled br"],
)
def test_a_seed_body_that_cannot_be_read_as_meant_is_refused_saying_why(
    headers: dict[str, str], body: bytes, status: int, says: str, read_key: IssuedKey
) -> None:
    response = Client().generic(
        "POST",
        "/v1/api/tap/analytics",
        body,
        content_type="application/json",
        HTTP_X_API_KEY=read_key.plaintext,
        **headers,
    )

    assert response.status_code == status, response.content[:300]
    assert says in response.json()["detail"]
    assert "sys.set_int_max_str_digits" not in response.json()["detail"]


def test_too_many_tags_or_parameters_get_a_400_that_says_so(
    read_key: IssuedKey, caplog: pytest.LogCaptureFixture
) -> None:
    tags = "&".join(f"tag={1000000000 + n}" for n in range(1001))
    many = "&".join(f"p{n}=1" for n in range(1200))

    too_many_tags = Client().get(
        f"{URL}?{query_string(**GOOD)}&{tags}", HTTP_X_API_KEY=read_key.plaintext
    )
    too_many_parameters = Client().get(f"{URL}?{many}", HTTP_X_API_KEY=read_key.plaintext)

    assert too_many_tags.status_code == 400
    assert too_many_tags.json() == {"tag": ["Give at most 1000 tags."]}
    assert too_many_parameters.status_code == 400
    assert "more than 1100 query parameters" in too_many_parameters.json()["detail"]
    assert "Traceback" not in caplog.text


def test_an_admin_form_over_the_size_limit_is_a_413(db: None) -> None:
    response = Client().post(
        "/admin/login/", {"username": "x" * (2 * MIB), "password": "y"}, HTTP_HOST="localhost"
    )

    assert response.status_code == 413
    assert response["Content-Type"] == "application/json"
