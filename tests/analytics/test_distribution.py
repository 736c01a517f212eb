"""The tap tables can be distributed by team with Citus without a schema change (SPEC 12):
every unique key and index leads with ``team_id``, so each is enforceable on one shard.
Read from the database itself, so a migration that adds another index is checked too."""

import pytest
from django.db import connection, models

from analytics.models import MinuteDay, TagDay, Tap, TapSequence, TeamDay, TeamRollup

DISTRIBUTED = [Tap, TapSequence, TeamRollup, TeamDay, TagDay, MinuteDay]


@pytest.mark.django_db
@pytest.mark.parametrize("model", DISTRIBUTED, ids=lambda model: model.__name__)
def test_every_key_and_index_of_a_tap_table_leads_with_team_id(
    model: type[models.Model],
) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("Citus distributes PostgreSQL tables (and SQLite reads composite keys badly)")
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, model._meta.db_table)
    keyed = {
        name: found["columns"]
        for name, found in constraints.items()
        if found["primary_key"] or found["unique"] or found["index"]
    }

    assert any(constraints[name]["primary_key"] for name in keyed), constraints
    assert {name: columns[:1] for name, columns in keyed.items()} == {
        name: ["team_id"] for name in keyed
    }
