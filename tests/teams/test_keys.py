import io
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from analytics.models import TapSequence
from teams import keys
from teams.keys import IssuedKey, create_key, read_key, resolve_key
from teams.models import Scope, Tag, Team, TeamAPIKey
from tests.conftest import add_taps

TEAM_URL = "/v1/team"


def issue(*args: str) -> str:
    out = io.StringIO()
    call_command("issue_key", *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_issue_key_prints_only_the_key_and_stores_only_its_hash(team: Team) -> None:
    printed = issue("--team", str(team.id), "--name", "dashboard")

    key = printed.strip()
    assert printed == key + "\n"
    stored = TeamAPIKey.objects.get()
    assert stored.team == team
    assert stored.name == "dashboard"
    assert stored.scope == Scope.READ
    assert key.startswith(stored.prefix + ".")
    assert key not in (stored.id, stored.hashed_key)
    assert stored.hashed_key.startswith("sha512$$")
    assert resolve_key(key) == stored


@pytest.mark.django_db
def test_issue_key_sets_scope_and_expiry(team: Team) -> None:
    issue("--team", str(team.id), "--scope", "ingest", "--expires", "30")

    stored = TeamAPIKey.objects.get()
    assert stored.scope == Scope.INGEST
    assert stored.expiry_date is not None
    remaining = stored.expiry_date - timezone.now()
    assert timedelta(days=29, hours=23) < remaining <= timedelta(days=30)


@pytest.mark.django_db
def test_issue_key_with_replace_revokes_the_old_key_of_that_name(team: Team) -> None:
    first = issue("--team", str(team.id), "--name", "demo").strip()
    kept = issue("--team", str(team.id), "--name", "other").strip()

    issue("--team", str(team.id), "--name", "demo", "--replace")

    assert TeamAPIKey.objects.get(prefix=first.partition(".")[0]).revoked
    assert not TeamAPIKey.objects.get(prefix=kept.partition(".")[0]).revoked
    assert TeamAPIKey.objects.filter(name="demo", revoked=False).count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--team", "999999"], "no team with id 999999"),
        (["--team", "{team}", "--expires", "0"], "--expires must be a number of days"),
        (["--team", "{team}", "--name", "x" * 51], "--name must be 1 to 50 characters"),
    ],
)
def test_issue_key_refuses_bad_arguments(team: Team, args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        issue(*[arg.format(team=team.id) for arg in args])
    assert TeamAPIKey.objects.count() == 0


@pytest.mark.django_db
def test_revoke_key_by_prefix_takes_effect_on_the_next_request(
    api: APIClient, read_key: IssuedKey
) -> None:
    assert api.get(TEAM_URL, HTTP_X_API_KEY=read_key.plaintext).status_code == 200

    call_command("revoke_key", read_key.api_key.prefix, stdout=io.StringIO())

    response = api.get(TEAM_URL, HTTP_X_API_KEY=read_key.plaintext)
    assert response.status_code == 401
    assert response.json() == {
        "detail": "This API key has been revoked; ask your operator for a new one."
    }


@pytest.mark.django_db
def test_revoke_key_with_an_unknown_prefix_is_an_error() -> None:
    with pytest.raises(CommandError, match="no key with prefix 'nope'"):
        call_command("revoke_key", "nope", stdout=io.StringIO())


@pytest.mark.django_db
def test_a_revoked_key_cannot_be_unrevoked(read_key: IssuedKey) -> None:
    call_command("revoke_key", read_key.api_key.prefix, stdout=io.StringIO())
    stored = TeamAPIKey.objects.get()

    stored.revoked = False
    with pytest.raises(Exception, match="revoked, which cannot be undone"):
        stored.save()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "headers",
    [
        lambda key: {"HTTP_X_API_KEY": key},
        lambda key: {"HTTP_AUTHORIZATION": f"Api-Key {key}"},
        lambda key: {"HTTP_AUTHORIZATION": f"api-key {key}"},
    ],
)
def test_a_valid_key_resolves_to_its_team_and_scope(
    api: APIClient, read_key: IssuedKey, team: Team, headers: object
) -> None:
    response = api.get(TEAM_URL, **headers(read_key.plaintext))  # type: ignore[operator]

    assert response.status_code == 200
    body = response.json()
    assert body["team"] == {"id": team.id, "name": "Acme", "time_zone": "Europe/Paris"}
    assert body["key"]["scope"] == "read"
    assert read_key.plaintext not in response.content.decode()


@pytest.mark.django_db
def test_a_key_is_read_with_its_teams_write_version(
    read_key: IssuedKey, team: Team, tag: Tag, other_team: Team
) -> None:
    assert read_key_version(read_key) == 0  # nothing stored yet

    add_taps((1, tag.uid, 1, "2023-03-01T10:00:00Z"), (2, tag.uid, 1, "2023-03-01T10:00:00Z"))
    other_tag = Tag.objects.create(uid=77, team=other_team)
    add_taps((1, other_tag.uid, 1, "2023-03-01T10:00:00Z"))

    assert read_key_version(read_key) == TapSequence.objects.get(team=team).last_seq == 2


@pytest.mark.django_db
def test_the_keys_statement_is_prepared_and_still_counted(read_key: IssuedKey, team: Team) -> None:
    with CaptureQueriesContext(connection) as statements:
        for _ in range(3):
            found = keys.read_key(read_key.plaintext)

    assert found.key.team == team and found.key.expiry_date is None
    assert found.key.created.tzinfo is not None and found.key.team.created.tzinfo is not None
    assert len(statements) == 3
    assert all(read_key.api_key.prefix in statement["sql"] for statement in statements)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s",
                ["%teams_teamapikey%"],
            )
            assert cursor.fetchone()[0] == 1


def read_key_version(key: IssuedKey) -> int:
    before = timezone.now()
    found = read_key(key.plaintext)
    assert before <= found.read_at <= timezone.now()
    return found.team_write_version


@pytest.mark.django_db
def test_a_missing_key_gets_401_json_saying_how_to_send_one(api: APIClient) -> None:
    response = api.get(TEAM_URL)

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Api-Key"
    assert "X-Api-Key" in response.json()["detail"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "presented",
    [
        "not-a-key",
        "abcdefgh.wrongsecret",
        "",
        ".",
        "x" * 5000,
        "'; DROP TABLE teams_team; --.x",
        "ключ.секрет",
        "abcdefgh.secret\x7f",
        "abcdefgh.sec ret",
    ],
)
def test_an_unknown_or_malformed_key_gets_401(
    api: APIClient, read_key: IssuedKey, presented: str
) -> None:
    response = api.get(TEAM_URL, HTTP_X_API_KEY=presented)

    assert response.status_code == 401
    assert set(response.json()) == {"detail"}
    assert Team.objects.count() == 1


@pytest.mark.django_db
def test_a_right_prefix_with_a_wrong_secret_learns_nothing(
    api: APIClient, read_key: IssuedKey
) -> None:
    call_command("revoke_key", read_key.api_key.prefix, stdout=io.StringIO())

    response = api.get(TEAM_URL, HTTP_X_API_KEY=read_key.api_key.prefix + ".guess")

    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid API key."}


@pytest.mark.django_db
def test_an_expired_key_gets_401(api: APIClient, team: Team) -> None:
    issued = create_key(team, expires_at=timezone.now() - timedelta(seconds=1))

    response = api.get(TEAM_URL, HTTP_X_API_KEY=issued.plaintext)

    assert response.status_code == 401
    assert response.json()["detail"].startswith("This API key expired at ")


@pytest.mark.django_db
def test_a_key_expires_at_its_expiry_instant(team: Team) -> None:
    expiry = timezone.now() + timedelta(hours=1)
    issued = create_key(team, expires_at=expiry)

    assert resolve_key(issued.plaintext, now=expiry - timedelta(microseconds=1))
    with pytest.raises(Exception, match="expired"):
        resolve_key(issued.plaintext, now=expiry)


@pytest.mark.django_db
def test_a_key_outside_its_scope_gets_403(api: APIClient, ingest_key: IssuedKey) -> None:
    response = api.get(TEAM_URL, HTTP_X_API_KEY=ingest_key.plaintext)

    assert response.status_code == 403
    assert response.json() == {
        "detail": "This key's scope is 'ingest'; this endpoint needs a 'read' key."
    }


@pytest.mark.django_db
def test_keys_of_one_team_never_show_another_team(
    api: APIClient, read_key: IssuedKey, other_team: Team
) -> None:
    other = create_key(other_team)

    mine = api.get(TEAM_URL, HTTP_X_API_KEY=read_key.plaintext).json()
    theirs = api.get(TEAM_URL, HTTP_X_API_KEY=other.plaintext).json()

    assert mine["team"]["name"] == "Acme"
    assert theirs["team"]["name"] == "Globex"
