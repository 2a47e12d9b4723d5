"""Shared by every stage script: a one-line error and a non-zero exit for fixable problems."""

from __future__ import annotations

import sys
from collections.abc import Callable

from cnnlab.errors import CnnlabError


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's main(); a CnnlabError becomes `error: <message>` on stderr and exit code 1."""
    try:
        main()
    except CnnlabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
