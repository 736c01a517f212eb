"""POST /v1/taps (SPEC 6.3): all-or-nothing batches from ingest keys."""

import json
import logging
import socket
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.utils import timezone
from hypothesis import given, settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from analytics import live
from analytics.ingest import TapRow
from analytics.ingest_api import TapBatchSerializer, plainly_valid_rows
from analytics.live import team_group
from analytics.models import Tap
from analytics.rollup import find_rollup_differences
from teams.keys import IssuedKey
from teams.models import Tag, Team
from teams.tags import move_tag

URL = "/v1/taps"


def post(api: APIClient, key: IssuedKey, body: Any) -> Any:
    return api.post(URL, body, format="json", HTTP_X_API_KEY=key.plaintext)


def item(tap_id: int, uid: int, **fields: Any) -> dict[str, Any]:
    return {"id": tap_id, "tag": uid, "count": 1, "at": "2024-03-01T10:00:00Z", **fields}


@pytest.fixture
def foreign_tag(other_team: Team) -> Tag:
    return Tag.objects.create(uid=2000000001, team=other_team)


@pytest.mark.django_db
def test_a_batch_is_stored_and_answered_with_accepted_and_duplicates(
    api: APIClient, ingest_key: IssuedKey, tag: Tag
) -> None:
    response = post(api, ingest_key, [item(1, tag.uid), item(2, tag.uid, count=3)])

    assert response.status_code == 201
    assert response.json() == {"accepted": 2, "duplicates": 0}
    assert sorted(Tap.objects.values_list("tap_id", "count")) == [(1, 1), (2, 3)]


@pytest.mark.django_db
def test_posting_a_batch_again_counts_nothing_twice(
    api: APIClient, ingest_key: IssuedKey, tag: Tag
) -> None:
    post(api, ingest_key, [item(1, tag.uid), item(2, tag.uid)])

    response = post(api, ingest_key, [item(2, tag.uid), item(3, tag.uid)])

    assert response.json() == {"accepted": 1, "duplicates": 1}
    assert Tap.objects.count() == 3


@pytest.mark.django_db
def test_count_defaults_to_one_and_at_to_now(
    api: APIClient, ingest_key: IssuedKey, tag: Tag
) -> None:
    before = timezone.now()

    post(api, ingest_key, [{"id": 7, "tag": tag.uid}])

    tap = Tap.objects.get()
    assert tap.count == 1
    assert before <= tap.created_at <= timezone.now()


@pytest.mark.django_db
def test_ingested_taps_keep_the_rollups_exact(
    api: APIClient, ingest_key: IssuedKey, tag: Tag
) -> None:
    items = [
        item(n, tag.uid, count=n % 4 + 1, at=f"2024-03-01T10:{n:02d}:00Z") for n in range(1, 60)
    ]

    post(api, ingest_key, items)
    post(api, ingest_key, items[::2])

    assert find_rollup_differences() == (0, [])


BAD_ITEMS: list[tuple[str, Callable[[Tag, Tag], dict[str, Any]], str]] = [
    ("unknown tag", lambda tag, foreign: item(2, 999), "tag"),
    ("another team's tag", lambda tag, foreign: item(2, foreign.uid), "tag"),
    ("unparseable time", lambda tag, foreign: item(2, tag.uid, at="yesterday"), "at"),
    ("time without a clock", lambda tag, foreign: item(2, tag.uid, at="2024-03-01"), "at"),
    (
        "time over 5 minutes ahead",
        lambda tag, foreign: item(
            2, tag.uid, at=(timezone.now() + timedelta(minutes=6)).isoformat()
        ),
        "at",
    ),
    (
        "time from a clock never set",
        lambda tag, foreign: item(2, tag.uid, at="0001-01-01T00:00:00Z"),
        "at",
    ),
    (
        "time before 1900 in UTC",
        lambda tag, foreign: item(2, tag.uid, at="1900-01-01T00:30:00+01:00"),
        "at",
    ),
    (
        "time with a NUL inside",
        lambda tag, foreign: item(2, tag.uid, at="2024-03-01T10:00:00\u0000Z"),
        "at",
    ),
    ("time of 100,000 characters", lambda tag, foreign: item(2, tag.uid, at="9" * 100_000), "at"),
    ("count of zero", lambda tag, foreign: item(2, tag.uid, count=0), "count"),
    ("negative count", lambda tag, foreign: item(2, tag.uid, count=-3), "count"),
    ("id repeated in the batch", lambda tag, foreign: item(1, tag.uid), "id"),
    ("missing id", lambda tag, foreign: {"tag": tag.uid}, "id"),
    ("id of zero", lambda tag, foreign: item(0, tag.uid), "id"),
    ("id over 64 bits", lambda tag, foreign: item(2**63, tag.uid), "id"),
    ("missing tag", lambda tag, foreign: {"id": 2}, "tag"),
    ("text id", lambda tag, foreign: item("two", tag.uid), "id"),
    # Each would be read as another id (1, 1000, 5, 100000): a retry could skip a tap.
    ("id in Arabic-Indic digits", lambda tag, foreign: item("\u0661", tag.uid), "id"),
    ("id with an underscore", lambda tag, foreign: item("1_000", tag.uid), "id"),
    ("id with a space", lambda tag, foreign: item(" 5", tag.uid), "id"),
    ("id with a fraction", lambda tag, foreign: item(5.0, tag.uid), "id"),
    ("id with an exponent", lambda tag, foreign: item(1e5, tag.uid), "id"),
    ("count with a fraction", lambda tag, foreign: item(2, tag.uid, count="2.0"), "count"),
    (
        "tag with an underscore",
        lambda tag, foreign: item(2, str(tag.uid)[:5] + "_" + str(tag.uid)[5:]),
        "tag",
    ),
]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("bad", "field"),
    [(make, field) for _, make, field in BAD_ITEMS],
    ids=[name for name, _, _ in BAD_ITEMS],
)
def test_one_bad_item_refuses_the_batch_naming_the_item(
    api: APIClient,
    ingest_key: IssuedKey,
    tag: Tag,
    foreign_tag: Tag,
    bad: Callable[[Tag, Tag], dict[str, Any]],
    field: str,
) -> None:
    batch = [item(1, tag.uid), bad(tag, foreign_tag), item(3, tag.uid)]

    response = post(api, ingest_key, batch)

    assert response.status_code == 400
    body = response.json()
    assert list(body) == ["1"]
    assert list(body["1"]) == [field]
    assert Tap.objects.count() == 0
    assert find_rollup_differences() == (0, [])


@pytest.mark.django_db
def test_unknown_and_foreign_tags_get_the_same_answer(
    api: APIClient, ingest_key: IssuedKey, tag: Tag, foreign_tag: Tag
) -> None:
    unknown = post(api, ingest_key, [item(1, 2000000002)]).json()["0"]["tag"][0]
    foreign = post(api, ingest_key, [item(1, foreign_tag.uid)]).json()["0"]["tag"][0]

    assert unknown.replace("2000000002", "UID") == foreign.replace(str(foreign_tag.uid), "UID")


@pytest.mark.django_db
def test_a_tap_from_before_the_team_got_the_tag_is_refused(
    api: APIClient, ingest_key: IssuedKey, team: Team, foreign_tag: Tag
) -> None:
    move_tag(foreign_tag, team, now=timezone.now() - timedelta(days=1))
    old = (timezone.now() - timedelta(days=2)).isoformat()

    response = post(api, ingest_key, [item(1, foreign_tag.uid, at=old)])

    assert response.status_code == 400
    assert list(response.json()["0"]) == ["at"]
    assert Tap.objects.count() == 0


@pytest.mark.django_db
def test_more_than_1000_items_is_a_400(api: APIClient, ingest_key: IssuedKey, tag: Tag) -> None:
    response = post(api, ingest_key, [item(n, tag.uid) for n in range(1, 1002)])

    assert response.status_code == 400
    assert "1000" in response.json()["non_field_errors"][0]
    assert Tap.objects.count() == 0


@pytest.mark.django_db
def test_a_body_that_is_not_a_list_is_a_400(
    api: APIClient, ingest_key: IssuedKey, tag: Tag
) -> None:
    response = post(api, ingest_key, item(1, tag.uid))

    assert response.status_code == 400
    assert "non_field_errors" in response.json()


@pytest.mark.django_db
def test_a_read_key_gets_403(api: APIClient, read_key: IssuedKey, tag: Tag) -> None:
    response = post(api, read_key, [item(1, tag.uid)])

    assert response.status_code == 403
    assert Tap.objects.count() == 0


@pytest.mark.django_db
def test_no_key_gets_401(api: APIClient, tag: Tag) -> None:
    response = api.post(URL, [item(1, tag.uid)], format="json")

    assert response.status_code == 401
    assert "detail" in response.json()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        ("id=1&tag=2", "application/x-www-form-urlencoded", 415),
        ('[{"id": 1, "tag": ', "application/json", 400),
        ("[" * 100_000 + "]" * 100_000, "application/json", 400),
        ('[{"id": 1, "tag": 1, "count": NaN}]', "application/json", 400),
        (b"[\xff\xfe]", "application/json", 400),
        ("[" + " " * (1024 * 1024) + "]", "application/json", 413),
    ],
    ids=["form body", "malformed", "absurdly nested", "NaN", "not UTF-8", "over 1 MiB"],
)
def test_bad_bodies_get_json_errors_not_500(
    api: APIClient, ingest_key: IssuedKey, body: str | bytes, content_type: str, status: int
) -> None:
    response = api.generic(
        "POST", URL, body, content_type=content_type, HTTP_X_API_KEY=ingest_key.plaintext
    )

    assert response.status_code == status
    assert "detail" in response.json()


@pytest.mark.django_db
def test_stored_taps_reach_the_team_group_after_commit(
    api: APIClient,
    ingest_key: IssuedKey,
    tag: Tag,
    team: Team,
    django_capture_on_commit_callbacks: Any,
) -> None:
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(team_group(team.pk), channel)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        post(api, ingest_key, [item(5, tag.uid, count=2)])
    for callback in callbacks:  # the commit
        callback()
    message = async_to_sync(layer.receive)(channel)

    assert message["type"] == "taps.stored"
    assert [(tap["id"], tap["tag"], tap["count"]) for tap in message["taps"]] == [(5, tag.uid, 2)]
    assert message["taps"][0]["at"] == "2024-03-01T10:00:00+00:00"
    assert message["taps"][0]["seq"] == message["last"]


@pytest.mark.django_db
def test_nothing_is_published_when_the_batch_is_refused(
    api: APIClient, ingest_key: IssuedKey, tag: Tag, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks() as callbacks:
        post(api, ingest_key, [item(5, tag.uid), item(5, tag.uid)])

    assert callbacks == []


@pytest.mark.django_db
def test_a_channel_layer_that_is_down_loses_no_taps(
    api: APIClient,
    ingest_key: IssuedKey,
    tag: Tag,
    settings: Any,
    caplog: pytest.LogCaptureFixture,
    django_capture_on_commit_callbacks: Any,
) -> None:
    # A real Redis client against a port where nothing listens: what an outage looks like.
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": ["redis://127.0.0.1:1/0"]},
        }
    }

    with caplog.at_level(logging.WARNING), django_capture_on_commit_callbacks(execute=True):
        response = post(api, ingest_key, [item(5, tag.uid)])

    assert response.status_code == 201
    assert Tap.objects.count() == 1
    assert "could not push 1 taps" in caplog.text
    assert json.dumps(response.json()) == '{"accepted": 1, "duplicates": 0}'


@pytest.mark.django_db(transaction=True)
def test_a_push_that_fails_after_the_commit_is_logged_and_the_answer_stands(
    api: APIClient,
    ingest_key: IssuedKey,
    tag: Tag,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A real commit, so Django itself runs the hook and logs its failure (it names the
    # hook by its __qualname__, which a functools.partial lacks: that was a 500).
    def fail(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("the database went away while reading the taps back")

    monkeypatch.setattr(live, "publish", fail)
    with caplog.at_level(logging.ERROR):
        response = post(api, ingest_key, [item(7, tag.uid)])

    assert response.status_code == 201
    assert Tap.objects.count() == 1
    assert "the database went away" in caplog.text


def test_a_channel_layer_that_hangs_does_not_hold_the_answer(
    api: APIClient,
    ingest_key: IssuedKey,
    tag: Tag,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    django_capture_on_commit_callbacks: Any,
) -> None:
    # A port that accepts connections and never answers: a Redis that hangs.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        settings.CHANNEL_LAYERS = {
            "default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                "CONFIG": {"hosts": [f"redis://127.0.0.1:{port}/0"]},
            }
        }
        monkeypatch.setattr(live, "PUBLISH_TIMEOUT_SECONDS", 0.2)
        with caplog.at_level(logging.WARNING), django_capture_on_commit_callbacks(execute=True):
            response = post(api, ingest_key, [item(6, tag.uid)])

    assert response.status_code == 201
    assert Tap.objects.count() == 1
    assert "could not push 1 taps" in caplog.text
    # Our bound, not channels-redis's own 5-second read timeout, ended the wait.
    assert "no answer within 0.2 s" in caplog.text


json_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-2, max_value=2**63 + 1),
    st.sampled_from([0, 1, 2**31 - 1, 2**31, 2**63 - 1, 2**63]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["7", " 7", "", "2023-01-01T00:00:00Z", " 2023-01-01T00:00:00+05:30 "]),
    st.sampled_from(["2023-02-30T00:00:00Z", "2999-01-01T00:00:00Z", "yesterday", "now"]),
)
items = st.dictionaries(st.sampled_from(["id", "tag", "count", "at", "extra"]), json_values)


@settings(max_examples=300, deadline=None)
@given(batch=st.lists(items, max_size=4))
def test_the_fast_path_accepts_only_what_the_serializer_accepts_alike(
    batch: list[dict[str, Any]],
) -> None:
    now = timezone.now()
    fast = plainly_valid_rows(batch, now)
    if fast is None:
        return
    serializer = TapBatchSerializer(data=batch, max_length=1000, context={"now": now})
    assert serializer.is_valid(), serializer.errors
    assert fast == [
        TapRow(item["id"], item["tag"], item["count"], item.get("at", now), line=position)
        for position, item in enumerate(serializer.validated_data)
    ]


def test_the_fast_path_takes_a_plain_batch() -> None:
    batch = [{"id": n, "tag": 5, "at": "2023-01-01T00:00:00Z"} for n in range(1, 1001)]
    rows = plainly_valid_rows(batch, timezone.now())
    assert rows is not None and len(rows) == 1000
    assert plainly_valid_rows([*batch, {"id": 1001, "tag": 5}], timezone.now()) is None
    assert plainly_valid_rows([*batch[:-1], {"id": 1, "tag": 5}], timezone.now()) is None


@pytest.mark.django_db
def test_every_bad_item_is_named_with_everything_wrong_with_it(
    api: APIClient, ingest_key: IssuedKey, team: Team, tag: Tag, foreign_tag: Tag
) -> None:
    move_tag(foreign_tag, team, now=timezone.now() - timedelta(days=1))
    old = (timezone.now() - timedelta(days=2)).isoformat()
    batch = [
        item(1, 2000000002),  # not the team's tag
        item(2, tag.uid),
        item(2, tag.uid),  # the id of item 1
        item(4, 2000000002, count=0),  # a bad count and not the team's tag
        item(5, foreign_tag.uid, at=old),  # before the team got the tag
        item(6, tag.uid),
    ]

    response = post(api, ingest_key, batch)

    assert response.status_code == 400
    body = response.json()
    assert {position: sorted(fields) for position, fields in body.items()} == {
        "0": ["tag"],
        "2": ["id"],
        "3": ["count", "tag"],
        "4": ["at"],
    }
    assert body["2"]["id"] == ["Duplicate id 2: item 1 has the same id."]
    assert Tap.objects.count() == 0
