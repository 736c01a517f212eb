"""Log records of clients' mistakes, kept short."""

import logging


class RefusedHostAsWarning(logging.Filter):
    """A request for a host name the service does not serve (``DisallowedHost``) is a
    client's or a scanner's mistake, answered 400: Django logs each at ERROR with a
    traceback, which buries real errors. It becomes one WARNING line."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info, record.exc_text = None, None
        return True
