"""Shared by every stage script: a one-line error and a non-zero exit for fixable problems."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable

from cnnlab.errors import CnnlabError


class Terminated(Exception):
    """SIGTERM arrived: unwind like an exception, so temporary outputs are removed on the way."""


def _on_sigterm(signum, frame) -> None:
    raise Terminated


def _close_progress_bars() -> None:
    """A stage that fails inside a loop leaves its tqdm bar open, mid-line on stderr. Closing it
    (a bar made with leave=False clears itself) lets the error start a line of its own."""
    from tqdm import tqdm

    for bar in list(tqdm._instances):
        bar.close()


def _fail(message: str, code: int) -> None:
    _close_progress_bars()
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's main(); a CnnlabError becomes `error: <message>` on stderr and exit code 1.
    SIGTERM exits 143 after cleaning up; a training run continues from its last epoch when the
    stage is run again."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        main()
    except CnnlabError as exc:
        _fail(str(exc), 1)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except Terminated:
        _fail("terminated (SIGTERM); run the stage again to resume", 143)
