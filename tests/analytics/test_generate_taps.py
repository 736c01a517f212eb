import csv
import hashlib
import io
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from analytics.loader import parse_instant


def generate(outdir: Path, *args: str) -> str:
    out = io.StringIO()
    call_command("generate_taps", str(outdir), *args, stdout=out)
    return out.getvalue()


def digest(folder: Path) -> str:
    return hashlib.sha256(
        b"".join((folder / name).read_bytes() for name in ("interview-tags.csv",
                                                          "interview-taps.csv"))
    ).hexdigest()  # fmt: skip


def test_the_same_seed_gives_the_same_files(tmp_path: Path) -> None:
    generate(tmp_path / "a", "--taps", "3000", "--seed", "7")
    generate(tmp_path / "b", "--taps", "3000", "--seed", "7")
    generate(tmp_path / "c", "--taps", "3000", "--seed", "8")

    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert digest(tmp_path / "a") != digest(tmp_path / "c")


def test_the_files_have_the_seed_format_and_the_asked_sizes(tmp_path: Path) -> None:
    generate(tmp_path, "--taps", "5000", "--tags", "40", "--teams", "5", "--days", "400")

    with (tmp_path / "interview-tags.csv").open() as stream:
        tags = list(csv.DictReader(stream))
    with (tmp_path / "interview-taps.csv").open() as stream:
        taps = list(csv.DictReader(stream))
    assert list(tags[0]) == ["tag_uid", "team_id", "created_at"]
    assert list(taps[0]) == ["id", "tag_uid", "count", "created_at"]
    assert len(tags) == 40
    assert {int(tag["team_id"]) for tag in tags} == {1, 2, 3, 4, 5}
    assert len(taps) == 5000
    assert len({tap["id"] for tap in taps}) == 5000
    assert {tap["tag_uid"] for tap in taps} <= {tag["tag_uid"] for tag in tags}
    assert all(int(tap["count"]) >= 1 for tap in taps)
    instants = [parse_instant(tap["created_at"]) for tap in taps]
    assert instants == sorted(instants)
    assert (instants[-1] - instants[0]).days >= 365


def test_team_sizes_are_uneven_and_weekends_quieter(tmp_path: Path) -> None:
    generate(tmp_path, "--taps", "20000", "--tags", "200", "--teams", "6")

    with (tmp_path / "interview-tags.csv").open() as stream:
        team_of = {row["tag_uid"]: row["team_id"] for row in csv.DictReader(stream)}
    per_team: dict[str, int] = {}
    per_weekday = [0] * 7
    with (tmp_path / "interview-taps.csv").open() as stream:
        for row in csv.DictReader(stream):
            team = team_of[row["tag_uid"]]
            per_team[team] = per_team.get(team, 0) + 1
            per_weekday[parse_instant(row["created_at"]).weekday()] += 1
    assert max(per_team.values()) > 3 * min(per_team.values())
    assert max(per_weekday[5:]) < min(per_weekday[:5])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tags", "2", "--teams", "3"], "tags"),
        (["--start", "2023-02-30"], "--start must be a date"),
        (["--days", "0"], "days"),
        (["--start", "0001-01-01"], "start must be from 1900-04-02 to "),
        (["--start", "1900-04-01"], "start must be from 1900-04-02 to "),
        (["--start", "2999-12-01", "--days", "100"], "to 2999-09-23 with days=100"),
    ],
)
def test_bad_options_are_clear_errors(tmp_path: Path, args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        generate(tmp_path, *args)


@pytest.mark.parametrize("outdir", ["a-file", "a-file/below", "/proc/nope"])
def test_an_outdir_that_cannot_be_written_is_a_clear_error(tmp_path: Path, outdir: str) -> None:
    (tmp_path / "a-file").write_text("")

    with pytest.raises(CommandError, match="cannot write the files there"):
        generate(tmp_path / outdir)


@pytest.mark.parametrize("start", ["1900-04-02", "2999-12-31"])
def test_the_first_and_last_days_allowed_give_instants_the_loader_takes(
    tmp_path: Path, start: str
) -> None:
    generate(tmp_path, "--start", start, "--days", "1", "--taps", "50")

    for name in ("interview-tags.csv", "interview-taps.csv"):
        with (tmp_path / name).open() as stream:
            for row in csv.DictReader(stream):
                parse_instant(row["created_at"])  # a RowError outside 1900-2999


@pytest.mark.django_db
def test_the_committed_sample_loads_without_a_bad_row() -> None:
    out, err = io.StringIO(), io.StringIO()

    call_command("load_taps", "--strict", stdout=out, stderr=err)

    assert err.getvalue() == ""
    assert "skipped: 0, duplicates: 0" in out.getvalue()
