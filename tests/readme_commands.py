"""The README's command blocks, as the tests run them.

A block is found by the first words of its first command, so the tests follow the README: rename
a key or a flag there and the test that runs the block runs the new text. Commands are taken as
written; a test may only replace the README's stand-ins (paths such as /data/, `<its md5>`) with
real values, and append `-S` overrides that shrink sizes to `dvc exp run` commands.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def bash_blocks(text: str | None = None) -> list[list[str]]:
    """Each ```bash block's commands: continuation lines joined, comments and blanks dropped."""
    text = README.read_text(encoding="utf-8") if text is None else text
    blocks = []
    for body in re.findall(r"```bash\n(.*?)```", text, re.S):
        joined = re.sub(r"\\\n\s*", "", body)
        commands = [re.sub(r"\s+#\s.*$", "", line).strip() for line in joined.splitlines()]
        blocks.append([c for c in commands if c and not c.startswith("#")])
    return blocks


def block(starts_with: str) -> list[str]:
    """The one block whose first command starts with `starts_with`."""
    found = [b for b in bash_blocks() if b and b[0].startswith(starts_with)]
    assert len(found) == 1, f"README has {len(found)} bash blocks starting {starts_with!r}"
    return found[0]


def prepared(command: str, replace: Mapping[str, str] = {},
             extra_set: Sequence[str] = ()) -> str:
    """`command` with the README's stand-ins replaced and, for `dvc exp run`, `-S` overrides
    appended after its own (later -S values win) and before its targets."""
    for old, new in replace.items():
        command = command.replace(old, new)
    if extra_set and command.startswith("dvc exp run"):
        words = shlex.split(command)
        targets = []
        while words and not words[-1].startswith("-") and "=" not in words[-1] \
                and words[-2:-1] not in (["-n"], ["-S"]):
            targets.insert(0, words.pop())
        extra = [w for kv in extra_set for w in ("-S", kv)]
        command = shlex.join([*words, *extra, *targets])
    return command


def run_block(commands: Sequence[str], cwd: Path, env: dict,
              replace: Mapping[str, str] = {}, extra_set: Sequence[str] = ()
              ) -> list[subprocess.CompletedProcess]:
    """Run each command with bash in `cwd`, stopping at the first failure (with its output)."""
    results = []
    for command in commands:
        line = prepared(command, replace, extra_set)
        result = subprocess.run(["bash", "-c", line], cwd=cwd, env=env, capture_output=True,
                                text=True, timeout=1800)
        assert result.returncode == 0, (f"README command failed: {line}\n{result.stdout[-3000:]}"
                                        f"\n{result.stderr[-3000:]}")
        results.append(result)
    return results
