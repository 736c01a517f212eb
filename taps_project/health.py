"""``GET /healthz`` (SPEC 6.4): 200 when every dependency answers, else 503."""

import psycopg
from django.conf import settings
from django.db import DatabaseError, connection
from django.http import HttpRequest, JsonResponse
from redis.exceptions import RedisError

from taps_project.errors import get_only
from taps_project.parameters import repeated_parameters

# A probe's own timeout is often a second or two: a database that gives no connection
# within this is reported down rather than waited on for TAPS_DB_WAIT.
HEALTH_DB_WAIT_SECONDS = 2


def database_state() -> str:
    pool = getattr(connection, "pool", None)
    try:
        if pool is None:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        else:
            pool.open()  # Django opens it with a process's first connection
            with pool.connection(timeout=HEALTH_DB_WAIT_SECONDS) as pooled:
                pooled.execute("SELECT 1")
    except (DatabaseError, psycopg.Error) as error:
        return f"down: {type(error).__name__}"
    return "ok"


def redis_state() -> str:
    if not settings.REDIS_URL:
        return "not configured"
    from django_redis import get_redis_connection

    try:
        get_redis_connection("default").ping()
    except RedisError as error:
        return f"down: {type(error).__name__}"
    return "ok"


@get_only
def healthz(request: HttpRequest) -> JsonResponse:
    repeated = repeated_parameters(request.GET)
    if repeated:
        return JsonResponse(repeated, status=400)
    checks = {"database": database_state(), "redis": redis_state()}
    healthy = all(state in {"ok", "not configured"} for state in checks.values())
    return JsonResponse(
        {"status": "ok" if healthy else "unavailable", **checks}, status=200 if healthy else 503
    )
