"""Keys kept out of the server's log.

The service never puts a key in a URL (SPEC 5, 8), but a client may: a dashboard of its
own opening ``/ws/v1/taps?key=...``, or a key pasted into a query string. uvicorn logs
each request's and each websocket's path with its query string, so before a record is
written, the value of every query parameter whose name speaks of a key, token, secret,
password or authorization becomes ``[redacted]``, and so does anything shaped like a key.
Django's own request log ("Not Found: /path") is filtered the same way.
"""

import logging
import re

_SECRET_PARAMETER = re.compile(
    r"([?&;][^=&#;\s]*(?:key|token|secret|passw|auth)[^=&#;\s]*=)[^&#;\s]*", re.IGNORECASE
)
# Anything shaped like an issued key (8 letters or digits, a dot, 32 more), wherever it
# stands: under a parameter name that says nothing (``?k=``), a percent-encoded one, or in
# the path.
_KEY_SHAPED = re.compile(r"(?<![A-Za-z0-9])[A-Za-z0-9]{8}\.[A-Za-z0-9]{32}(?![A-Za-z0-9])")
# uvicorn's loggers of HTTP requests and of websocket handshakes, and Django's of
# answers it logs (4xx as warnings, 5xx as errors) by path.
SERVER_LOGGERS = ("uvicorn.access", "uvicorn.error", "django.request")


def redacted(text: str) -> str:
    return _KEY_SHAPED.sub("[redacted]", _SECRET_PARAMETER.sub(r"\1[redacted]", text))


class RedactSecrets(logging.Filter):
    """Redacts secret query parameters in a record's string arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                redacted(arg) if isinstance(arg, str) else arg for arg in record.args
            )
        return True


def redact_server_logs() -> None:
    for name in SERVER_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(existing, RedactSecrets) for existing in logger.filters):
            logger.addFilter(RedactSecrets())
