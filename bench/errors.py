class BenchError(Exception):
    """A problem the user can fix (a missing tool, an unreachable service); the message
    says how. ``python -m bench`` prints it without a traceback."""
