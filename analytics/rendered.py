"""JSON answers of ``GET /v1/analytics/taps`` as bytes: written by the view, replayed by
``analytics.shortcut``. Both put the request's own ``team`` and ``as_of`` members around
the same stored bytes, with the same function, so the two answers cannot drift apart."""

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any


def json_bytes(data: Any) -> bytes:
    """JSON as DRF's ``JSONRenderer`` writes it by default: compact, UTF-8, no NaN."""
    return json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def tap_counts_json(
    team_id: int, team_name: str, before_as_of: bytes, as_of: datetime, after_as_of: bytes
) -> bytes:
    """``{"team": ..., <before_as_of>, "as_of": ..., <after_as_of>}``."""
    team = json_bytes({"team": {"id": team_id, "name": team_name}})[:-1]
    as_of_member = json_bytes({"as_of": as_of.isoformat(timespec="microseconds")})[1:-1]
    return b",".join((team, before_as_of, as_of_member, after_as_of)) + b"}"


@dataclass(frozen=True)
class Replayable:
    """What the view tells ``analytics.shortcut`` about a JSON answer it may replay: the
    team and write version it is under, the team's zone (the default ``tz``), the bytes
    around ``as_of``, and when its partial flags stop being true (None: never)."""

    team_id: int
    version: int
    team_zone: str
    before_as_of: bytes
    after_as_of: bytes
    valid_until: datetime | None
