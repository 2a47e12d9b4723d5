"""A throwaway git + DVC repository holding this project's pipeline, for end-to-end tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from configobj import ConfigObj

PROJECT = Path(__file__).resolve().parents[1]
DVC = [sys.executable, "-m", "dvc"]


def run(cmd: list[str], cwd: Path, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def dvc(root: Path, env: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run(DVC + list(args), root, env, check=check)


def edit_params(root: Path, change: Callable[[dict], None]) -> None:
    path = root / "params.yaml"
    params = yaml.safe_load(path.read_text())
    change(params)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def make_project(root: Path, change: Callable[[dict], None]) -> dict:
    """Copy the pipeline into `root`, apply `change` to its params, commit; return the env."""
    for name in ("dvc.yaml", "params.yaml", ".gitignore"):
        shutil.copy(PROJECT / name, root / name)
    for folder in ("stages", "src"):
        shutil.copytree(PROJECT / folder, root / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    env = {**os.environ, "PYTHONPATH": str(root / "src"), "DVC_NO_ANALYTICS": "1",
           # `python` in dvc.yaml must be this interpreter, with cnnlab's dependencies.
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    run(["git", "init", "-q"], root, env)
    dvc(root, env, "init", "-q")
    dvc(root, env, "config", "core.analytics", "false")
    # The plots' custom templates and offline HTML page, and the setting that makes `dvc plots`
    # use that page, as the project has them.
    shutil.copytree(PROJECT / ".dvc" / "plots", root / ".dvc" / "plots")
    dvc(root, env, "config", "plots.html_template", project_dvc_config()["plots"]["html_template"])
    edit_params(root, change)
    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-qm", "pipeline"], root, env)
    return env


def project_dvc_config() -> ConfigObj:
    """The project's own .dvc/config (DVC writes it in ConfigObj's format)."""
    return ConfigObj(str(PROJECT / ".dvc" / "config"), encoding="utf-8")


def ran_stages(output: str) -> set[str]:
    """The stages `dvc repro` / `dvc exp run` actually ran, from their output."""
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}
