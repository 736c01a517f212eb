"""Quoted names for the few statements composed by hand, once, for the hottest paths."""

from collections.abc import Iterable
from typing import Any

from django.db import connection, models


def table(model: type[models.Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def column(model: type[models.Model], name: str) -> str:
    field = model._meta.get_field(name)
    name_in_table = field.column if isinstance(field, models.Field) else None
    if name_in_table is None:
        raise TypeError(f"{model.__name__}.{name} is not a column")
    return connection.ops.quote_name(name_in_table)


def columns(model: type[models.Model], alias: str) -> list[str]:
    """Every concrete column, in the order ``Model.from_db`` takes them."""
    return [f"{alias}.{column(model, field.name)}" for field in model._meta.concrete_fields]


def array_literal(values: Iterable[Any]) -> str:
    """A PostgreSQL array literal of numbers or dates: psycopg adapts a list parameter
    element by element in Python, which cost more than the statement it fed."""
    return "{" + ",".join(map(str, values)) + "}"
