"""Settings in both modes, read in a fresh interpreter with a controlled environment."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PRODUCTION = {
    "DATABASE_URL": "postgres://taps:secret@db.example:5433/taps",
    "REDIS_URL": "redis://cache.example:6380/2",
    "SECRET_KEY": "s" * 20 + "ecret-key-for-tests-only-0123456789-abcdefghij",
}
PRINT_SETTINGS = """
import json
from django.conf import settings
db = settings.DATABASES["default"]
print(json.dumps({
    "engine": db["ENGINE"], "name": str(db["NAME"]), "host": db.get("HOST", ""),
    "conn_max_age": db.get("CONN_MAX_AGE"), "health_checks": db.get("CONN_HEALTH_CHECKS"),
    "pg_options": db.get("OPTIONS", {}).get("options", ""),
    "pool": db.get("OPTIONS", {}).get("pool"),
    "cache": settings.CACHES["default"]["BACKEND"],
    "cache_location": settings.CACHES["default"].get("LOCATION", ""),
    "channels": settings.CHANNEL_LAYERS["default"]["BACKEND"],
    "channels_hosts": [
        host["address"]
        for host in settings.CHANNEL_LAYERS["default"].get("CONFIG", {}).get("hosts", [])
    ],
    "debug": settings.DEBUG, "ssl_redirect": getattr(settings, "SECURE_SSL_REDIRECT", False),
    "rate": settings.TAPS_RATE_LIMIT, "max_buckets": settings.TAPS_MAX_BUCKETS,
}))
"""


def run_django(code: str, env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    clean = {key: value for key, value in os.environ.items() if key not in _SETTINGS_VARS}
    clean.update({"DJANGO_SETTINGS_MODULE": "taps_project.settings", "TAPS_VAR_DIR": str(tmp_path)})
    clean.update(env)
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup()\n" + code],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )


_SETTINGS_VARS = {
    "DATABASE_URL", "REDIS_URL", "CHANNELS_REDIS_URL", "SECRET_KEY", "DEBUG", "ALLOWED_HOSTS",
    "TAPS_RATE_LIMIT", "TAPS_INGEST_RATE_LIMIT", "TAPS_MAX_BUCKETS", "TAPS_HTTPS",
}  # fmt: skip


def read_settings(env: dict[str, str], tmp_path: Path) -> dict[str, object]:
    result = run_django(PRINT_SETTINGS, env, tmp_path)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_no_environment_gives_the_embedded_mode(tmp_path: Path) -> None:
    values = read_settings({}, tmp_path)

    assert values["engine"] == "django.db.backends.sqlite3"
    assert values["name"] == str(tmp_path / "taps.sqlite3")
    assert values["cache"] == "django.core.cache.backends.locmem.LocMemCache"
    assert values["channels"] == "channels.layers.InMemoryChannelLayer"
    assert values["debug"] is False
    assert values["rate"] == "100/hour"
    assert values["max_buckets"] == 10_000
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0


def test_the_embedded_mode_makes_its_directories_with_a_secret_key_given(
    tmp_path: Path,
) -> None:
    var = tmp_path / "not" / "made" / "yet"
    env = {"SECRET_KEY": PRODUCTION["SECRET_KEY"], "TAPS_VAR_DIR": str(var)}
    code = "from django.db import connection; connection.ensure_connection(); print('up')"

    result = run_django(code, env, tmp_path)

    assert result.returncode == 0, result.stderr
    assert (var / "taps.sqlite3").is_file() and not (var / "secret_key").exists()


def test_the_loopback_names_are_served_beside_the_allowed_hosts(tmp_path: Path) -> None:
    # A container's health check asks for http://127.0.0.1:8000/healthz.
    code = """
from django.test import Client
print(Client(HTTP_HOST="127.0.0.1:8000").get("/healthz").status_code)
print(Client(HTTP_HOST="taps.example.com").get("/healthz").status_code)
print(Client(HTTP_HOST="other.example.com").get("/healthz").status_code)
"""
    env = {"ALLOWED_HOSTS": "taps.example.com", "TAPS_HTTPS": "1", "TAPS_SQLITE_PATH": ":memory:"}
    env["SECRET_KEY"] = PRODUCTION["SECRET_KEY"]

    migrate = (
        "from django.core.management import call_command\ncall_command('migrate', verbosity=0)\n"
    )
    result = run_django(migrate + code, env, tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["200", "200", "400"]


def test_database_and_redis_urls_give_the_production_backends(tmp_path: Path) -> None:
    values = read_settings(PRODUCTION, tmp_path)

    assert values["engine"] == "taps_project.postgresql"
    assert (values["name"], values["host"]) == ("taps", "db.example")
    # Pooled, not persistent: under ASGI each request thread would keep a connection.
    assert values["conn_max_age"] == 0
    assert values["pool"] == {"min_size": 1, "max_size": 10, "timeout": 10}
    # Checked by the backend, not on every request (tests/test_postgresql_backend.py).
    assert values["health_checks"] is False
    assert values["pg_options"] == "-c temp_buffers=512MB -c jit=off"
    assert values["cache"] == "django_redis.cache.RedisCache"
    assert values["cache_location"] == "redis://cache.example:6380/2"
    assert values["channels"] == "channels_redis.core.RedisChannelLayer"
    assert values["channels_hosts"] == ["redis://cache.example:6380/2"]


def test_channels_redis_url_overrides_the_channel_layer_host(tmp_path: Path) -> None:
    values = read_settings({**PRODUCTION, "CHANNELS_REDIS_URL": "redis://pubsub:6379/0"}, tmp_path)

    assert values["channels_hosts"] == ["redis://pubsub:6379/0"]
    assert values["cache_location"] == "redis://cache.example:6380/2"


def test_the_channel_layer_may_shard_over_several_redis_servers(tmp_path: Path) -> None:
    urls = "redis://pubsub-a:6379/0, redis://pubsub-b:6379/0"
    values = read_settings({**PRODUCTION, "CHANNELS_REDIS_URL": urls}, tmp_path)

    assert values["channels_hosts"] == ["redis://pubsub-a:6379/0", "redis://pubsub-b:6379/0"]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"CHANNELS_REDIS_URL": "redis://a:6379/0;redis://b:6379/0,b:6379"},
            "CHANNELS_REDIS_URL must be one Redis URL or several separated by commas",
        ),
        ({"DATABASE_URL": PRODUCTION["DATABASE_URL"]}, "SECRET_KEY must be set"),
        ({"DEBUG": "maybe"}, "DEBUG must be 1/0"),
        ({"TAPS_MAX_BUCKETS": "lots"}, "TAPS_MAX_BUCKETS must be a whole number"),
        ({"TAPS_MAX_BUCKETS": "0"}, "TAPS_MAX_BUCKETS must be at least 1"),
        ({"TAPS_RATE_LIMIT": "100/fortnight"}, "TAPS_RATE_LIMIT must look like 100/hour"),
        ({"TAPS_RATE_LIMIT": "-1/hour"}, "TAPS_RATE_LIMIT must look like 100/hour"),
        ({"DATABASE_URL": "mysql://x@y/z", "SECRET_KEY": "k"}, "must be a PostgreSQL URL"),
        ({"TAPS_REQUEST_THREADS": "12"}, "TAPS_REQUEST_THREADS (12) must not exceed"),
    ],
)
def test_a_bad_setting_stops_the_start_with_a_message(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    result = run_django("", env, tmp_path)

    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert message in result.stderr


def test_check_deploy_is_clean_behind_tls(tmp_path: Path) -> None:
    env = {**PRODUCTION, "DEBUG": "0", "TAPS_HTTPS": "1"}
    result = run_django(
        "from django.core.management import call_command\n"
        "call_command('check', deploy=True, fail_level='WARNING')",
        env,
        tmp_path,
    )

    assert result.returncode == 0, result.stderr


def test_behind_tls_plain_http_is_redirected_in_json_keeping_the_method(
    tmp_path: Path,
) -> None:
    code = """
import json
from django.test import Client
client = Client(HTTP_HOST="localhost")
for response in [
    client.get("/v1/usage?x=1"),
    client.post("/v1/taps", "[]", content_type="application/json"),
    client.get("/v1/usage", HTTP_X_FORWARDED_PROTO="https"),
    client.get("/healthz"),
]:
    print(json.dumps([response.status_code, response.get("Location"), response["Content-Type"]]))
"""
    env = {**PRODUCTION, "TAPS_HTTPS": "1"}
    del env["DATABASE_URL"], env["REDIS_URL"]
    migrate = (
        "from django.core.management import call_command\ncall_command('migrate', verbosity=0)\n"
    )

    result = run_django(migrate + code, env, tmp_path)

    assert result.returncode == 0, result.stderr
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    assert answers == [
        [301, "https://localhost/v1/usage?x=1", "application/json"],
        [308, "https://localhost/v1/taps", "application/json"],
        [401, None, "application/json"],
        [200, None, "application/json"],
    ]


def test_without_taps_https_plain_http_is_served(tmp_path: Path) -> None:
    values = read_settings(PRODUCTION, tmp_path)

    assert values["ssl_redirect"] is False


def test_the_redis_cache_and_channel_layer_work_over_a_real_connection(
    redis_url: str, tmp_path: Path
) -> None:
    code = """
import asyncio
from django.core.cache import cache
from channels.layers import get_channel_layer
cache.set("probe", 41)
cache.incr("probe")
print(cache.get("probe"))
async def roundtrip():
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add("team-probe", channel)
    await layer.group_send("team-probe", {"type": "probe", "n": 7})
    return (await layer.receive(channel))["n"]
print(asyncio.run(roundtrip()))
"""
    result = run_django(code, {**PRODUCTION, "REDIS_URL": redis_url}, tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["42", "7"]
