"""JSON answers of ``GET /v1/analytics/taps`` as bytes: written by the view, replayed by
``analytics.shortcut``. Both put the request's own ``team`` and ``as_of`` members around
the same stored bytes, with the same function, so the two answers cannot drift apart."""

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from analytics.queries import BucketSums, TapCounts


def json_bytes(data: Any) -> bytes:
    """JSON as DRF's ``JSONRenderer`` writes it by default: compact, UTF-8, no NaN."""
    return json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def tap_counts_json(
    team_id: int, team_name: str, head: bytes, counted: "CountedJSON", as_of: datetime
) -> bytes:
    """``{"team": ..., <head>, <counted.range>, "as_of": ..., <counted.rest>}``."""
    team = json_bytes({"team": {"id": team_id, "name": team_name}})[:-1]
    as_of_member = json_bytes({"as_of": as_of.isoformat(timespec="microseconds")})[1:-1]
    return b",".join((team, head, counted.range, as_of_member, counted.rest)) + b"}"


def _results(results: BucketSums) -> str:
    # Written out rather than through dictionaries and json: thousands of buckets are
    # most of a long answer's cost, and labels and numbers need no escaping.
    pairs = zip(results.buckets.json_items, results.sums, strict=True)
    if results.fill:
        return ",".join([f"{before}{taps}{after}" for (before, after), taps in pairs])
    return ",".join([f"{before}{taps}{after}" for (before, after), taps in pairs if taps])


@dataclass(frozen=True)
class CountedJSON:
    """Counts rendered once, as the members of a JSON object, in two parts so that a
    response can put its own ``as_of`` between them."""

    range: bytes  # "start" and "end"
    rest: bytes  # "total", then "results" or "series", then "compare" if asked

    @classmethod
    def of(
        cls, counts: TapCounts, compared: "tuple[str, CountedJSON] | None" = None
    ) -> "CountedJSON":
        range_ = f'"start":"{counts.start.isoformat()}","end":"{counts.end.isoformat()}"'
        if counts.series is None:
            assert counts.results is not None
            rest = f'"total":{counts.total},"results":[{_results(counts.results)}]'
        else:
            series = ",".join(
                f'{{"tag":{one.tag},"total":{one.total},"results":[{_results(one.results)}]}}'
                for one in counts.series
            )
            rest = f'"total":{counts.total},"series":[{series}]'
        rest_bytes = rest.encode()
        if compared is not None:
            name, earlier = compared
            rest_bytes += b',"compare":{"range":' + json_bytes(name) + b"," + earlier.range
            rest_bytes += b"," + earlier.rest + b"}"
        return cls(range_.encode(), rest_bytes)

    def as_dict(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(b"{" + self.range + b"," + self.rest + b"}")
        return loaded


@dataclass(frozen=True)
class Replayable:
    """What the view tells ``analytics.shortcut`` about a JSON answer it may replay: the
    team and write version it is under, the team's zone (the default ``tz``), the
    members between ``team`` and the counts, where the cached answer is in Redis, and
    when its partial flags stop being true (None: never)."""

    team_id: int
    version: int
    team_zone: str
    head: bytes
    answer_key: str
    valid_until: datetime | None
