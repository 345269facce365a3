"""The one exception type users see: a problem with their input, reported in one line."""


class BigModelError(Exception):
    """Bad input or state the user can fix (file, key, column, shape).

    The CLI prints ``error: <message>`` on one line and exits with code 2; the server answers 4xx
    with ``{"error": message}``. Anything else escaping is a bug and keeps its traceback.
    """
