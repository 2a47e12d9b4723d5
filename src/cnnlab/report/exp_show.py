"""DVC's experiment table (`dvc exp show --json`) as plain runs: each experiment's params, metrics
and the state DVC's queue left it in. The JSON is DVC's documented output; dvc.api.exp_show
flattens it into display columns (a metric of 0 becomes None there), so it is read here instead."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cnnlab.errors import CnnlabError

PENDING = frozenset({"queued", "running"})


@dataclass(frozen=True)
class Run:
    """One DVC experiment (from `dvc exp run`, or a task of `dvc queue start`)."""

    name: str
    rev: str
    baseline: str  # the commit the experiment was derived from
    created: str  # ISO timestamp ("" while queued): newer sorts later
    state: str  # success, failed, queued or running
    params: Mapping[str, object]  # flattened: {"experiments.cnn.seed": 1, ...}
    metrics: Mapping[str, Mapping[str, object]]  # metrics file -> its top-level values


@dataclass(frozen=True)
class ExpTable:
    workspace_params: Mapping[str, object]  # flattened, as params.yaml stands now
    runs: tuple[Run, ...]


def read_exp_show(repo: Path | None = None) -> list[dict]:
    """The raw `dvc exp show --json` of the repository at `repo` (the current one by default)."""
    cmd = [sys.executable, "-m", "dvc", "exp", "show", "--json"]
    proc = subprocess.run(cmd, cwd=repo, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip()] or ["no output"]
        last = lines[-1].strip().removeprefix("ERROR: ")
        raise CnnlabError(f"`dvc exp show --json` failed: {last}")
    return json.loads(proc.stdout)


def parse_exp_show(rows: list[dict]) -> ExpTable:
    """Runs of every baseline listed (HEAD, unless `dvc exp show` was told otherwise)."""
    workspace: Mapping[str, object] = {}
    runs = []
    for baseline in rows:
        if baseline["rev"] == "workspace":
            workspace = flatten_params((baseline.get("data") or {}).get("params") or {})
        for exp in baseline.get("experiments") or []:
            tip = exp["revs"][0]
            data = tip.get("data") or {}
            runs.append(Run(
                name=exp.get("name") or tip["rev"][:7],
                rev=tip["rev"],
                baseline=baseline["rev"],
                created=data.get("timestamp") or "",
                state=_state(exp.get("executor"), tip.get("error")),
                params=flatten_params(data.get("params") or {}),
                metrics={path: entry["data"] for path, entry in (data.get("metrics") or {}).items()
                         if isinstance(entry.get("data"), dict)},
            ))
    return ExpTable(workspace, tuple(runs))


def _state(executor: dict | None, error: dict | None) -> str:
    # An experiment run outside the queue has no executor: its error says whether it failed.
    if executor and executor.get("state"):
        return str(executor["state"])
    return "failed" if error else "success"


def flatten_params(files: Mapping[str, dict]) -> dict[str, object]:
    """{"params.yaml": {"data": {"a": {"b": 1}}}} -> {"a.b": 1}; other files prefix "file:"."""
    flat: dict[str, object] = {}
    for file, entry in files.items():
        prefix = "" if file == "params.yaml" else f"{file}:"
        _flatten(entry.get("data") or {}, prefix, flat)
    return flat


def _flatten(tree: Mapping[str, object], prefix: str, out: dict[str, object]) -> None:
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            _flatten(value, f"{prefix}{key}.", out)
        else:
            out[f"{prefix}{key}"] = value
