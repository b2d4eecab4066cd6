"""The ``alpose`` command: one entry point, one subcommand per job.

Argparse subcommands (``evaluate``, ``prepare``) own their flags; Hydra subcommands (``train``)
receive the rest of the command line as Hydra overrides. Every failure becomes one
``error: ...`` line, never a traceback: exit status 2 for an :class:`AlposeError` (bad input; the
line says what to do), 1 for anything unexpected. ``alpose --verbose <command> ...`` (or
``ALPOSE_VERBOSE=1``) prints the Python traceback before that line.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence

from hourglass import numerics
from hourglass.errors import VERBOSE_ENV, report

# name -> (one-line help, module path, function name). Each command module is imported only when
# its command runs, after the numerics limits are set (`alpose evaluate` never loads torch).
ARGPARSE_COMMANDS: dict[str, tuple[str, str, str]] = {
    "evaluate": (
        "score a prediction file against MPII/LSP ground truth",
        "active.cli.evaluate",
        "register",
    ),
    "table": (
        "mean +- sd, paired t-tests and learning curves of an experiment",
        "active.cli.table",
        "register",
    ),
    "status": (
        "list which (acquirer, seed, cycle) cells of an experiment are done",
        "active.cli.status",
        "register",
    ),
    "analyze": (
        "analyses of a finished run (learning-loss: Gamma fit, LearningLoss++ tables)",
        "active.cli.analyze",
        "register",
    ),
    "prepare": (
        "render or convert a dataset into the HDF5 crop cache",
        "active.cli.prepare",
        "register",
    ),
    "bench": (
        "speed: images/s of training, inference, acquisition and data path (experiment=NAME: its wall time); egl: EGL++ gradient norms",
        "active.cli.bench",
        "register",
    ),
    "report": (
        "one self-contained HTML page: table, curves, diagnostics, galleries per acquirer",
        "active.cli.report",
        "register",
    ),
    "inspect": (
        "diagnostics of one (acquirer, seed, cycle): score vs true error, overlap, families",
        "active.cli.inspect",
        "register",
    ),
}
HYDRA_COMMANDS: dict[str, tuple[str, str, str]] = {
    "run": (
        "run an active-learning experiment (Hydra: experiment=quickstart, acquirers=[...], seeds=[...])",
        "active.cli.run",
        "main",
    ),
    "train": (
        "train a stacked hourglass (Hydra overrides: dataset=..., model=..., train.epochs=...)",
        "active.cli.train",
        "main",
    ),
}


def _load(module: str, attr: str) -> Callable:
    return getattr(importlib.import_module(module), attr)


def _usage() -> str:
    lines = ["usage: alpose [--verbose] <command> [options]", "", "commands:"]
    for name, (help_text, _, _) in {**ARGPARSE_COMMANDS, **HYDRA_COMMANDS}.items():
        lines.append(f"  {name:<10} {help_text}")
    lines.append("\n`alpose <command> --help` describes each one. --verbose (or ALPOSE_VERBOSE=1):")
    lines.append("print the Python traceback of an error before its one `error:` line.")
    return "\n".join(lines)


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot raise again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill PID``, a scheduler, a container stop) as an exception, so that it unwinds
    like Ctrl-C: the run stops its worker processes and exits 143 with one line."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


def _terminate_as_exception() -> object:
    """Turn SIGTERM into :class:`Terminated` while a command runs; returns the old handler."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_terminated)


def _restore(handler: object) -> None:
    if handler is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch ``alpose <command> ...``; returns the process exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    while argv and argv[0] in {"-v", "--verbose"}:
        os.environ[VERBOSE_ENV] = "1"  # also seen by worker processes
        argv = argv[1:]
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(_usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    previous = _terminate_as_exception()
    try:
        numerics.apply(numerics.requested(rest))  # before any command loads torch
        if command in HYDRA_COMMANDS:
            _, module, attr = HYDRA_COMMANDS[command]
            return int(_load(module, attr)(rest) or 0)
        if command in ARGPARSE_COMMANDS:
            help_text, module, attr = ARGPARSE_COMMANDS[command]
            parser = argparse.ArgumentParser(prog=f"alpose {command}", description=help_text)
            run = _load(module, attr)(parser)
            args = parser.parse_args(rest)
            return int(run(args) or 0)
    except Terminated:
        print(
            "terminated (SIGTERM); finished cycles are kept, rerun the command to resume",
            file=sys.stderr,
        )
        return 143
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `alpose table ... | head`: the reader left; stop quietly
        _silence_stdout()
        return 141
    except Exception as err:  # AlposeError: exit 2; anything else: exit 1; one line either way
        return report(err)
    finally:
        _restore(previous)
    known = ", ".join(sorted({**ARGPARSE_COMMANDS, **HYDRA_COMMANDS}))
    print(f"error: unknown command '{command}'; known commands: {known}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
