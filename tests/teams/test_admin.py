import io
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.contrib.messages import get_messages
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.utils import timezone

from analytics.models import Tap
from teams.keys import IssuedKey, resolve_key
from teams.models import Tag, Team, TeamAPIKey
from tests.conftest import add_taps


@pytest.fixture
def operator(db: None) -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("operator", "op@example.com", "pw"))
    return client


def test_a_key_issued_in_the_admin_is_shown_once_and_works(operator: Client, team: Team) -> None:
    assert operator.get("/admin/teams/teamapikey/add/").status_code == 200
    added = operator.post(
        "/admin/teams/teamapikey/add/",
        {"team": team.id, "name": "from admin", "scope": "read", "expiry_date_0": "",
         "expiry_date_1": ""},
    )  # fmt: skip
    response = operator.get(added["Location"])

    assert added.status_code == 302 and response.status_code == 200
    # Not in a cookie: the messages cookie is signed, not encrypted.
    assert "messages" not in added.cookies and "messages" not in response.cookies
    messages = [str(message) for message in get_messages(response.wsgi_request)]
    shown = [m for m in messages if m.startswith("The API key for from admin is: ")]
    assert len(shown) == 1
    plaintext = shown[0].split(": ")[1].split(" ")[0]
    stored = TeamAPIKey.objects.get()
    assert resolve_key(plaintext) == stored
    assert stored.team == team
    assert (
        plaintext
        not in operator.get(f"/admin/teams/teamapikey/{stored.pk}/change/").content.decode()
    )


def test_the_admin_offers_no_keys_without_a_team(operator: Client) -> None:
    assert operator.get("/admin/rest_framework_api_key/apikey/add/").status_code == 404
    assert b"rest_framework_api_key" not in operator.get("/admin/").content


@pytest.mark.parametrize(
    "url", ["/admin/teams/teamapikey/?scope__exact=%00", "/admin/teams/teamapikey/1%00/change/"]
)
def test_a_nul_in_an_admin_url_is_no_500(operator: Client, url: str) -> None:
    response = operator.get(url)

    # PostgreSQL cannot compare text with a NUL in it; SQLite can, and finds nothing.
    assert response.status_code in ({400} if connection.vendor == "postgresql" else {200, 302})


def test_revoking_in_the_admin_stops_the_key(operator: Client, read_key: IssuedKey) -> None:
    url = f"/admin/teams/teamapikey/{read_key.api_key.pk}/change/"
    response = operator.post(
        url, {"name": "reader", "revoked": "on", "expiry_date_0": "", "expiry_date_1": ""}
    )

    assert response.status_code == 302
    assert TeamAPIKey.objects.get().revoked


def test_a_team_with_an_unknown_time_zone_is_refused(operator: Client) -> None:
    response = operator.post(
        "/admin/teams/team/add/",
        {"name": "Initech", "time_zone": "Mars/Olympus", "created_0": "2024-01-01",
         "created_1": "00:00:00"},
    )  # fmt: skip

    assert response.status_code == 200
    assert "is not an IANA time zone" in response.content.decode()
    assert not Team.objects.filter(name="Initech").exists()


def test_a_team_added_in_the_admin_gets_a_free_id_after_a_load(
    operator: Client, tmp_path: Path
) -> None:
    tags = tmp_path / "tags.csv"
    tags.write_text("tag_uid,team_id,created_at\n5,41,2023-01-01T00:00:00Z\n")
    call_command("load_taps", "--tags", str(tags), "--no-taps", stdout=io.StringIO())

    operator.post("/admin/teams/team/add/", {"name": "Initech", "time_zone": "Asia/Kolkata"})

    added = Team.objects.get(name="Initech")
    assert added.id > 41
    assert added.time_zone == "Asia/Kolkata"


def test_moving_a_tag_in_the_admin_keeps_its_taps_with_the_first_team(
    operator: Client, tag: Tag, team: Team, other_team: Team
) -> None:
    add_taps((1, tag.uid, 3, "2023-05-01T10:00:00Z"))

    response = operator.post(f"/admin/teams/tag/{tag.uid}/change/", {"team": other_team.id,
                             "created_at_0": "2023-01-01", "created_at_1": "00:00:00"})  # fmt: skip
    add_taps((2, tag.uid, 5, timezone.now().isoformat()))

    assert response.status_code == 302
    tag.refresh_from_db()
    assert tag.team == other_team
    assert tag.owner_since is not None
    assert list(Tap.objects.filter(team=team).values_list("tap_id", flat=True)) == [1]
    assert list(Tap.objects.filter(team=other_team).values_list("tap_id", flat=True)) == [2]


def test_taps_are_listed_read_only(operator: Client, tag: Tag) -> None:
    add_taps((7, tag.uid, 2, "2023-05-01T10:00:00Z"))

    listing = operator.get("/admin/analytics/taprecord/")
    adding = operator.get("/admin/analytics/taprecord/add/")
    one = operator.get("/admin/analytics/taprecord/7/change/")

    assert listing.status_code == 200
    assert "1000009083" in listing.content.decode()
    assert adding.status_code == 403
    assert one.status_code == 302
    assert Tap.objects.get().created_at == datetime(2023, 5, 1, 10, tzinfo=UTC)


def test_a_team_or_tag_with_taps_cannot_be_deleted_in_the_admin(
    operator: Client, tag: Tag, team: Team
) -> None:
    add_taps((1, tag.uid, 1, "2023-05-01T10:00:00Z"))

    team_page = operator.post(f"/admin/teams/team/{team.id}/delete/", {"post": "yes"})
    tag_page = operator.post(f"/admin/teams/tag/{tag.uid}/delete/", {"post": "yes"})

    assert (team_page.status_code, tag_page.status_code) == (403, 403)
    assert Team.objects.filter(pk=team.pk).exists()
    assert Tag.objects.filter(pk=tag.pk).exists()


def test_a_tag_without_taps_can_be_deleted_in_the_admin(operator: Client, tag: Tag) -> None:
    response = operator.post(f"/admin/teams/tag/{tag.uid}/delete/", {"post": "yes"})

    assert response.status_code == 302
    assert not Tag.objects.filter(pk=tag.pk).exists()


def test_the_tap_list_counts_at_most_its_cap(
    operator: Client, tag: Tag, monkeypatch: pytest.MonkeyPatch
) -> None:
    from analytics.admin import CappedCountPaginator

    monkeypatch.setattr(CappedCountPaginator, "CAP", 2)
    add_taps(*[(tap_id, tag.uid, 1, "2023-05-01T10:00:00Z") for tap_id in range(1, 6)])

    listing = operator.get("/admin/analytics/taprecord/")

    assert listing.context["cl"].result_count == 3
