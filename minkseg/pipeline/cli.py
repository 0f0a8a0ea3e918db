"""What every stage script shares: load params.yaml, run one pipeline function, turn user errors into one line.

A user error (any MinkSegError: bad params, bad data, unusable checkpoint, unwritable output) prints
``minkseg <stage>: error: <what, where, how to fix>`` on stderr and exits 2; Ctrl-C exits 130. Anything else is a
bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
from typing import Any, Callable, Mapping

from minkseg.config import Params, load_params
from minkseg.errors import MinkSegError

__all__ = ["run_stage", "run_guarded", "progress_wanted", "report_error", "EXIT_USER_ERROR"]

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_NO_ACCESS = (errno.EACCES, errno.EROFS, errno.EPERM)
_WORKER_PREFIX = "Caught "  # torch.utils.data re-raises a worker's exception as "Caught X in DataLoader worker ..."


def _user_message(exc: MinkSegError) -> str:
    """The error's own text, also when a DataLoader worker raised it (torch then wraps it in a traceback dump)."""
    text = str(exc)
    if text.startswith(_WORKER_PREFIX) and "Original Traceback" in text:
        last = text.rstrip().splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return text


def report_error(stage: str, message: str) -> None:
    """One ``minkseg <stage>: error:`` line per line of the message (a params file can have several bad keys)."""
    for line in message.splitlines() or [""]:
        print(f"minkseg {stage}: error: {line}", file=sys.stderr)


def _parse(stage: str, argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"stages/{stage}.py", description=f"MinkSeg {stage} stage (run by DVC)")
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser.parse_args(argv)


def run_guarded(name: str, fn: Callable[[], Any], rerun_hint: str = "re-run `dvc repro` to continue") -> int:
    """Run ``fn()`` and return the exit code: 0, 2 for a user error (one ``minkseg <name>: error:`` line per
    message line), 130 on Ctrl-C. Shared by the stage scripts and the ``minkseg`` command."""
    try:
        fn()
    except MinkSegError as exc:
        report_error(name, _user_message(exc))
        return EXIT_USER_ERROR
    except OSError as exc:
        if exc.errno in _NO_SPACE:
            report_error(name, f"cannot write {exc.filename or 'output'}: {exc.strerror}; free disk space, then "
                               "re-run (inputs were not modified)")
            return EXIT_USER_ERROR
        if exc.errno in _NO_ACCESS:
            report_error(name, f"cannot access {exc.filename or 'a file'}: {exc.strerror}; fix that path's "
                               "permissions (or choose another folder), then re-run (inputs were not modified)")
            return EXIT_USER_ERROR
        raise
    except KeyboardInterrupt:
        print(f"minkseg {name}: interrupted; {rerun_hint}", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


def progress_wanted(no_progress: bool = False) -> bool:
    """Progress bars on a terminal (or with MINKSEG_PROGRESS=1), never in logs."""
    return not no_progress and sys.stderr.isatty() or os.environ.get("MINKSEG_PROGRESS") == "1"


def run_stage(stage: str, fn: Callable[..., Mapping[str, Any] | Any], argv: list[str] | None = None) -> int:
    """Run ``fn(params, progress=...)`` and return the process exit code."""
    logging.basicConfig(level=logging.INFO, format=f"minkseg {stage}: %(message)s")
    args = _parse(stage, argv)
    progress = progress_wanted(args.no_progress)

    def call() -> None:
        params: Params = load_params(args.params)
        fn(params, progress=progress)

    return run_guarded(stage, call)
