"""Django's PostgreSQL backend, with a cheaper check of pooled connections.

psycopg's pool check (Django's ``CONN_HEALTH_CHECKS`` with a pool) is an empty query: a
round trip on every request, about a twelfth of a cached answer's cost. Here a
connection the check found alive a moment ago is not checked again within
``ALIVE_WINDOW_SECONDS``; HikariCP skips its check in the same way
(``aliveBypassWindowMs``, 500 ms). A connection that broke within the window fails the
request that uses it and is then discarded by the pool, as one that breaks mid-request
always was.
"""

import time
from typing import Any

from django.db.backends.postgresql import base
from psycopg import Connection, OperationalError
from psycopg_pool import ConnectionPool

ALIVE_WINDOW_SECONDS = 0.5


def check_unless_recently_alive(conn: Connection[Any]) -> None:
    """Raise if ``conn`` is broken, unless it passed this check within the window."""
    now = time.monotonic()
    alive_at: float | None = getattr(conn, "taps_alive_at", None)
    if alive_at is not None and now - alive_at < ALIVE_WINDOW_SECONDS:
        return
    ConnectionPool.check_connection(conn)
    conn.taps_alive_at = now  # type: ignore[attr-defined]


class DatabaseWrapper(base.DatabaseWrapper):
    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        pool = self.pool
        if pool is None:
            return super().get_new_connection(conn_params)
        # As the pool's own check does: a broken connection goes back, where the pool
        # discards it (and opens another), and the next one is tried.
        for _ in range(pool.max_size):
            connection = super().get_new_connection(conn_params)
            try:
                check_unless_recently_alive(connection)
            except OperationalError:
                pool.putconn(connection)
            else:
                return connection
        return super().get_new_connection(conn_params)
