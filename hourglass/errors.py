"""The one exception type that the command line turns into a single clear line."""


class AlposeError(Exception):
    """Bad input or a failed run that the user can fix; the message says what to do.

    The CLI prints ``error: <message>`` and exits non-zero without a traceback.
    """
