"""Settings for Tap Analytics, read from the environment (SPEC 3).

With no environment variables the service runs embedded: a SQLite file, the local-memory
cache and the in-memory channel layer. ``DATABASE_URL`` and ``REDIS_URL`` switch on
PostgreSQL, django-redis and channels-redis. Every value is read here and nowhere else.
"""

import os
import secrets
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def env_bool(name: str, *, default: bool = False) -> bool:
    value = env_str(name).lower()
    if value == "":
        return default
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be 1/0, true/false, yes/no or on/off, not {value!r}")


def env_int(name: str, *, default: int, minimum: int = 1) -> int:
    value = env_str(name)
    if value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, not {value!r}") from None
    if number < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, not {number}")
    return number


def env_list(name: str, *, default: list[str]) -> list[str]:
    value = env_str(name)
    if value == "":
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


def env_rate(name: str, *, default: str) -> str:
    """A rate such as ``100/hour``: a positive count per second, minute, hour or day."""
    value = env_str(name, default)
    count, _, period = value.partition("/")
    if not count.isdigit() or int(count) < 1 or period not in {"second", "minute", "hour", "day"}:
        raise ImproperlyConfigured(
            f"{name} must look like 100/hour (a positive count per second, minute, hour "
            f"or day), not {value!r}"
        )
    return value


def embedded_secret_key(path: Path) -> str:
    """A random key made once per checkout, so the embedded mode needs no configuration."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


DATABASE_URL = env_str("DATABASE_URL")
REDIS_URL = env_str("REDIS_URL")
CHANNELS_REDIS_URL = env_str("CHANNELS_REDIS_URL") or REDIS_URL
# Several Redis servers, comma-separated, and channels-redis spreads the channels and
# groups over them (docs/SCALING.md).
CHANNELS_REDIS_HOSTS = [url.strip() for url in CHANNELS_REDIS_URL.split(",") if url.strip()]
for _url in CHANNELS_REDIS_HOSTS:
    if not _url.startswith(("redis://", "rediss://", "unix://")):
        raise ImproperlyConfigured(
            "CHANNELS_REDIS_URL must be one Redis URL or several separated by commas "
            f"(redis://host:6379/0,redis://other:6379/0), not {_url!r}"
        )
VAR_DIR = Path(env_str("TAPS_VAR_DIR") or BASE_DIR / "var")

DEBUG = env_bool("DEBUG")
SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if DATABASE_URL:
        raise ImproperlyConfigured(
            "SECRET_KEY must be set when DATABASE_URL is (production mode); "
            "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(50))'"
        )
    SECRET_KEY = embedded_secret_key(VAR_DIR / "secret_key")

LOOPBACK_HOSTS = ["localhost", "127.0.0.1", "[::1]"]
# The loopback names are always served: a container's health check asks for
# http://127.0.0.1:8000/healthz whatever the public name, and a Host header naming the
# loopback can only make links point at the client's own machine.
ALLOWED_HOSTS = [
    *env_list("ALLOWED_HOSTS", default=[]),
    *LOOPBACK_HOSTS,
]
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", default=[])
CSRF_FAILURE_VIEW = "taps_project.errors.csrf_failure"

TAPS_HTTPS = env_bool("TAPS_HTTPS")
if TAPS_HTTPS:
    SECURE_SSL_REDIRECT = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = 31_536_000
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

TAPS_RATE_LIMIT = env_rate("TAPS_RATE_LIMIT", default="100/hour")
TAPS_INGEST_RATE_LIMIT = env_rate("TAPS_INGEST_RATE_LIMIT", default="600/minute")
TAPS_MAX_BUCKETS = env_int("TAPS_MAX_BUCKETS", default=10_000)
TAPS_DB_POOL_SIZE = env_int("TAPS_DB_POOL_SIZE", default=10)
# Seconds a request waits for a PostgreSQL connection before it is answered 503. The pool
# holds one per request thread, so a wait this long means the database cannot be reached.
TAPS_DB_WAIT = env_int("TAPS_DB_WAIT", default=10)
# Threads that run requests in each server process (taps_project.handlers). A request
# spends about half its time waiting for PostgreSQL or Redis, so a few threads keep a
# core busy; more only contend for the GIL (bench-10M, 2 workers, 32 connections: 4
# threads answered 10-15% more requests per second than 10). Keep it at most
# TAPS_DB_POOL_SIZE, which websocket consumers draw on too.
TAPS_REQUEST_THREADS = env_int("TAPS_REQUEST_THREADS", default=4)
if TAPS_REQUEST_THREADS > TAPS_DB_POOL_SIZE:
    raise ImproperlyConfigured(
        f"TAPS_REQUEST_THREADS ({TAPS_REQUEST_THREADS}) must not exceed TAPS_DB_POOL_SIZE "
        f"({TAPS_DB_POOL_SIZE}): every request thread may need a connection; raise the pool "
        "or lower the threads"
    )
# Websockets (SPEC 8): close a socket with no auth message after this long, and recheck
# an open socket's key this often (a revoked key's socket must close within 5 seconds).
# Not from the environment: the spec fixes them; tests shorten them.
TAPS_WS_AUTH_SECONDS = 5.0
TAPS_WS_KEY_CHECK_SECONDS = 2.0

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_api_key",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "teams",
    "analytics",
]

MIDDLEWARE = [
    "taps_project.errors.DatabaseUnavailableMiddleware",
    "taps_project.https.JSONSecureRedirectMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

# A key issued in the admin is shown once, as a message on the next page: kept in the
# session (the database) until then, not in the signed but readable messages cookie.
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"

ROOT_URLCONF = "taps_project.urls"
ASGI_APPLICATION = "taps_project.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# psycopg prepares a statement after this many executions, or at once when asked.
PREPARE_ONLY_WHEN_ASKED = 2**31 - 1

if DATABASE_URL:
    DATABASES = {
        # No health checks of Django's: the backend checks a pooled connection before
        # using it, unless the check passed within the last half second.
        "default": dj_database_url.parse(DATABASE_URL)
    }
    if DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
        raise ImproperlyConfigured(
            "DATABASE_URL must be a PostgreSQL URL (postgres://user@host:5432/name); "
            "leave it unset for the embedded SQLite database"
        )
    DATABASES["default"]["ENGINE"] = "taps_project.postgresql"
    # The loader stages a batch in a temporary table (about 4 MB at 50,000 rows); the
    # default 8 MB of local buffers would send a larger --batch-size to temporary files.
    # They are allocated only as temporary tables fill, so web connections, whose stages
    # hold one request's taps, do not grow.
    options = DATABASES["default"].setdefault("OPTIONS", {})
    # No JIT: the statements here are small, and the write path's, planned over a staging
    # table without statistics, looked costly enough to compile: 85 ms of JIT for a 7 ms
    # day-level rebuild in every 1000-tap ingest request.
    options["options"] = "-c temp_buffers=512MB -c jit=off"
    # Under ASGI every request runs in a thread of its own, so persistent connections
    # (one per thread) pile up: 150 concurrent requests in one worker exhausted
    # PostgreSQL's 100 connections. A pool per worker process bounds them; requests
    # beyond it wait for a connection instead of failing.
    # Django turns psycopg's prepared statements off (for poolers such as PgBouncer in
    # transaction mode; here each worker has its own pool). This keeps automatic
    # preparation off but lets a statement run with ``prepare=True`` be prepared: the
    # key's statement, which every API request runs (``teams.keys``).
    options["prepare_threshold"] = PREPARE_ONLY_WHEN_ASKED
    options["pool"] = {
        "min_size": 1,
        "max_size": TAPS_DB_POOL_SIZE,
        "timeout": TAPS_DB_WAIT,
    }
else:
    SQLITE_PATH = Path(env_str("TAPS_SQLITE_PATH") or VAR_DIR / "taps.sqlite3")
    # Made here, not only with the embedded secret key: a SECRET_KEY from the environment
    # skips that, and SQLite cannot create the file's directory.
    try:
        SQLITE_PATH.parent.mkdir(parents=True, exist_ok=True)
        VAR_DIR.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ImproperlyConfigured(
            f"cannot make the directory of the embedded database ({error}); set TAPS_VAR_DIR "
            "or TAPS_SQLITE_PATH to a writable place"
        ) from None
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(SQLITE_PATH),
            # IMMEDIATE: a write transaction takes the lock up front, so the write path's
            # read-then-write steps cannot interleave with another writer.
            "OPTIONS": {
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
            # A file, not memory, so that tests can run the loader in a subprocess.
            "TEST": {"NAME": str(VAR_DIR / "test-taps.sqlite3")},
        }
    }
    # SQLite builds the taps' covering indexes without their INCLUDE columns, which only
    # spare PostgreSQL table reads; the warning greeted every `scripts/serve`.
    SILENCED_SYSTEM_CHECKS = ["models.W040"]

if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "taps",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 1, "SOCKET_TIMEOUT": 1},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

CHANNELS_REDIS_SOCKET_TIMEOUT = 15
if CHANNELS_REDIS_HOSTS:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                # redis-py 8 gives up on a read after 5 s by default, and channels-redis
                # waits on an idle channel with a 5 s BRPOP: each idle worker's receive
                # failed every 5 s, was logged as an outage and lost a second of taps.
                "hosts": [
                    {"address": url, "socket_timeout": CHANNELS_REDIS_SOCKET_TIMEOUT}
                    for url in CHANNELS_REDIS_HOSTS
                ],
                "prefix": "taps",
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# Serve the dashboard's static files from the apps, so it works without collectstatic in
# the embedded mode, the image and the tests; they are few and small.
WHITENOISE_USE_FINDERS = True
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# SPEC 6: a body over 1 MiB is refused (413, mapped in taps_project.errors).
DATA_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024
# Room for the 1000 tags a query may name (analytics.filters.MAX_TAGS) beside the other
# parameters, so that the tag limit's own message is the one a client meets.
DATA_UPLOAD_MAX_NUMBER_FIELDS = 1100

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["teams.auth.TeamAPIKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["teams.auth.HasScope"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["taps_project.parsers.StrictJSONParser"],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "taps_project.negotiation.FormatNegotiation",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "taps_project.errors.api_exception_handler",
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Tap Analytics API",
    "DESCRIPTION": (
        "Tap counts of your team's NFC tags. Send your team's API key in the X-Api-Key "
        "header. Each key may make TAPS_RATE_LIMIT analytics requests per rolling window."
    ),
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "filters": {"client_mistake": {"()": "taps_project.quiet_logs.ClientMistakeAsWarning"}},
    "loggers": {
        f"django.security.{name}": {"filters": ["client_mistake"]}
        for name in ("DisallowedHost", "TooManyFieldsSent", "RequestDataTooBig")
    },
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO").upper()},
}
