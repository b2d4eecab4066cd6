"""The one exception type that the command line turns into a single clear line, and that line.

Every failure of an ``alpose`` command ends as exactly one ``error: ...`` line on stderr:
:class:`AlposeError` (bad input the user can fix; exit 2) as its message, an ``OSError`` on a
named path (exit 2) as that path and what to check, anything else (a bug; exit 1) as its type
and message (cut to a few hundred characters) plus a pointer to ``--verbose``. With
``alpose --verbose ...`` (or ``ALPOSE_VERBOSE=1``) the Python traceback is printed before the line.
"""

from __future__ import annotations

import os
import sys
import traceback

VERBOSE_ENV = "ALPOSE_VERBOSE"
UNEXPECTED_CHARS = 400  # an unexpected error's message is cut to this: the traceback has the rest


class AlposeError(Exception):
    """Bad input or a failed run that the user can fix; the message says what to do.

    The CLI prints ``error: <message>`` and exits non-zero without a traceback.
    """


def verbose() -> bool:
    """Whether tracebacks are wanted (``alpose --verbose`` sets ``ALPOSE_VERBOSE=1``)."""
    return os.environ.get(VERBOSE_ENV, "").strip() not in ("", "0", "false", "no")


def one_line(err: BaseException) -> str:
    """The text of the ``error:`` line for ``err`` (whitespace collapsed to one line)."""
    if isinstance(err, AlposeError) or _is_compact_hydra(err):  # already written for the user
        text = str(err).removeprefix("error: ").split("\nConfig search path")[0]
    elif _is_hydra_usage_error(err):
        text = f"{err} (see `alpose <command> --help`)"
    elif isinstance(err, OSError) and err.filename is not None:  # a path the user gave or owns
        text = (
            f"cannot use {err.filename} ({err.strerror or type(err).__name__}); check that the "
            "path exists and is writable (paths.data, paths.runs) and that the disk is not full"
        )
    else:
        hint = "" if verbose() else "; rerun with `alpose --verbose ...` for the traceback"
        message = " ".join(str(err).split())
        if len(message) > UNEXPECTED_CHARS:  # e.g. a library's error that carries a whole log
            message = message[: UNEXPECTED_CHARS - 5] + " ..."
        text = f"unexpected {type(err).__name__}: {message}{hint}"
    return " ".join(text.split())


def exit_status(err: BaseException) -> int:
    """2 for errors the user can fix (ours, Hydra's override errors, a bad path), else 1."""
    if isinstance(err, OSError) and err.filename is not None:
        return 2
    return 2 if isinstance(err, AlposeError) or _is_hydra_usage_error(err) else 1


def report(err: BaseException) -> int:
    """Print ``err`` as one ``error:`` line (traceback first when verbose); return the exit status."""
    if verbose():
        traceback.print_exception(type(err), err, err.__traceback__, file=sys.stderr)
    print(f"error: {one_line(err)}", file=sys.stderr, flush=True)
    return exit_status(err)


def _is_hydra_usage_error(err: BaseException) -> bool:
    """Hydra's config-composition and override-parsing errors (an unknown key, a bad value)."""
    names = {cls.__name__ for cls in type(err).__mro__}
    return bool(names & {"ConfigCompositionException", "OverrideParseException"})


def _is_compact_hydra(err: BaseException) -> bool:
    """Hydra's ``CompactHydraException``: a message meant for the user, shown without traceback."""
    return any(cls.__name__ == "CompactHydraException" for cls in type(err).__mro__)
