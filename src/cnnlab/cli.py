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


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's main(); a CnnlabError becomes `error: <message>` on stderr and exit code 1.
    SIGTERM exits 143 after cleaning up; a training run continues from its last epoch when the
    stage is run again."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        main()
    except CnnlabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except Terminated:
        print("error: terminated (SIGTERM); run the stage again to resume", file=sys.stderr)
        sys.exit(143)
