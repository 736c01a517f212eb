"""The pool's connection check, on real PostgreSQL connections whose server process is
ended under them."""

import os
import time
from collections.abc import Iterator

import psycopg
import pytest
from django.db import DEFAULT_DB_ALIAS, connection, connections

from taps_project.postgresql.base import ALIVE_WINDOW_SECONDS, check_unless_recently_alive
from tests.conftest import in_ci

SERVER_URL = os.environ.get("TAPS_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _connect() -> psycopg.Connection:
    try:
        return psycopg.connect(SERVER_URL, autocommit=True, connect_timeout=2)
    except psycopg.OperationalError as error:
        if in_ci():
            pytest.fail(f"PostgreSQL is not reachable at {SERVER_URL}: {error}")
        pytest.skip(f"PostgreSQL is not reachable at {SERVER_URL}")


@pytest.fixture
def admin() -> Iterator[psycopg.Connection]:
    with _connect() as conn:
        yield conn


def _end_server_process(admin: psycopg.Connection, conn: psycopg.Connection) -> None:
    admin.execute("SELECT pg_terminate_backend(%s)", [conn.info.backend_pid])
    # The backend needs a moment to exit after the signal.
    time.sleep(0.1)


def test_a_connection_never_checked_is_checked(admin: psycopg.Connection) -> None:
    with _connect() as conn:
        _end_server_process(admin, conn)

        with pytest.raises(psycopg.OperationalError):
            check_unless_recently_alive(conn)


def test_a_connection_found_alive_is_trusted_within_the_window_only(
    admin: psycopg.Connection,
) -> None:
    with _connect() as conn:
        _end_server_process(admin, conn)
        # Found alive just now, as far as the check knows (however slow this machine is).
        conn.taps_alive_at = time.monotonic()  # type: ignore[attr-defined]

        check_unless_recently_alive(conn)  # within the window: no round trip

        conn.taps_alive_at -= ALIVE_WINDOW_SECONDS  # type: ignore[attr-defined]
        with pytest.raises(psycopg.OperationalError):
            check_unless_recently_alive(conn)


def test_a_live_connection_passes_the_check_and_is_marked_alive(
    admin: psycopg.Connection,
) -> None:
    with _connect() as conn:
        before = time.monotonic()
        check_unless_recently_alive(conn)

        assert conn.taps_alive_at >= before  # type: ignore[attr-defined]
        assert conn.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.django_db
def test_the_backend_never_hands_out_a_pooled_connection_that_died_idle(
    admin: psycopg.Connection,
) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("the pool is PostgreSQL's")
    # Two connections from the pool, used, left idle long enough to be checked, returned.
    users = [connections.create_connection(DEFAULT_DB_ALIAS) for _ in range(2)]
    for user in users:
        user.ensure_connection()
    for user in users:
        user.connection.taps_alive_at -= ALIVE_WINDOW_SECONDS
        user.close()
    # Every connection to the test database dies but this test's own.
    admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = %s AND pid NOT IN (pg_backend_pid(), %s)",
        [connection.settings_dict["NAME"], connection.connection.info.backend_pid],
    )
    time.sleep(0.1)

    fresh = connections.create_connection(DEFAULT_DB_ALIAS)
    try:
        with fresh.cursor() as cursor:
            cursor.execute("SELECT 1")
            assert cursor.fetchone() == (1,)
    finally:
        fresh.close()
