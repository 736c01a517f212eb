"""Keys kept out of the server's log.

The service never puts a key in a URL (SPEC 5, 8), but a client may: a dashboard of its
own opening ``/ws/v1/taps?key=...``, or a key pasted into a query string. uvicorn logs
each request's and each websocket's path with its query string, so before a record is
written, the value of every query parameter whose name speaks of a key, token, secret,
password or authorization becomes ``[redacted]``.
"""

import logging
import re

_SECRET_PARAMETER = re.compile(
    r"([?&][^=&#\s]*(?:key|token|secret|passw|auth)[^=&#\s]*=)[^&#\s]*", re.IGNORECASE
)
# uvicorn's loggers of HTTP requests and of websocket handshakes.
SERVER_LOGGERS = ("uvicorn.access", "uvicorn.error")


def redacted(text: str) -> str:
    return _SECRET_PARAMETER.sub(r"\1[redacted]", text)


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
