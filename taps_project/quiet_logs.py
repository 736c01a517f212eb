"""Log records of clients' mistakes, kept short."""

import logging


class ClientMistakeAsWarning(logging.Filter):
    """A request for a host name the service does not serve (``DisallowedHost``), with too
    many parameters or too large a form is a client's or a scanner's mistake, answered
    with a 4xx: Django logs each at ERROR with a traceback, which buries real errors. It
    becomes one WARNING line."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info, record.exc_text = None, None
        return True
