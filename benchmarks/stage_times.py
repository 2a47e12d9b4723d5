"""Where the suite's longest test spends its time: the README's quick profile, run exactly as
tests/test_full_pipeline_e2e.py runs it (same tiny archives and -S sizes), in a throwaway git + DVC
project, timing every stage from DVC's own "Running stage" lines. Then `dvc status` on the
finished project, and the start-up of each stage script on its own (`--help`: imports only).

    CNNLAB_DATASETS=../shared/datasets .venv/bin/python benchmarks/stage_times.py [--keep]

Prints one row per kind of stage (count, total, mean, slowest), the run's total, and the fixed
costs every stage pays: the script's imports and DVC's bookkeeping around it. --keep leaves the
project behind and prints where.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import readme_commands  # noqa: E402
import test_full_pipeline_e2e as full_e2e  # noqa: E402
from cifar_archives import write_binary_archive  # noqa: E402
from dvc_project import DVC, make_project  # noqa: E402


def build_project(base: Path) -> tuple[Path, dict, str]:
    """The e2e test's project and its quick-profile command, ready to run."""
    data = base / "data"
    data.mkdir()
    archive = Path(os.environ.get("CNNLAB_DATASETS", ROOT.parent / "shared/datasets"))
    shutil.copy(archive / "coco-mini.tar.gz", data / "coco-mini.tar.gz")
    write_binary_archive(data / "cifar10-jpeg.tar.gz", records_per_batch=40)
    root = base / "project"
    root.mkdir()
    env = make_project(root, lambda params: None)
    replace = full_e2e.stand_ins(data)
    unpack = [c for c in readme_commands.block("mkdir -p local/coco-mini") if "tar xzf" in c]
    readme_commands.run_block(unpack, root, env, replace)
    quick = readme_commands.block("dvc exp run -n quick")
    return root, env, readme_commands.prepared(quick[0], replace, full_e2e.tiny_sizes())


def timed_run(root: Path, env: dict, command: str) -> tuple[float, dict[str, float]]:
    """Run `command`; each stage's seconds, from one "Running stage" line to the next."""
    start = time.monotonic()
    proc = subprocess.Popen(["bash", "-c", command], cwd=root, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    stages, name, last = {}, None, start
    for line in proc.stdout:
        # A progress bar's \r-separated output may share the line with one or more of them.
        for started in re.findall(r"Running stage '([^']+)'", line):
            now = time.monotonic()
            if name:
                stages[name] = now - last
            name, last = started, now
    if proc.wait() != 0:
        sys.exit(f"error: the quick profile failed in stage {name}")
    end = time.monotonic()
    stages[name] = end - last
    return end - start, stages


def seconds(cmd: list[str], cwd: Path, env: dict) -> float:
    start = time.monotonic()
    subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, check=True)
    return time.monotonic() - start


def kind(stage: str) -> str:
    return stage.split("@")[0].removesuffix("_chained")


def print_tables(total: float, stages: dict[str, float], fixed: dict[str, float]) -> None:
    print(f"quick profile at the e2e test's sizes: {len(stages)} stages in {total:.0f} s\n")
    print("| stage kind | count | total s | mean s | slowest |")
    print("|---|---:|---:|---:|---|")
    kinds: dict[str, list[str]] = {}
    for stage in stages:
        kinds.setdefault(kind(stage), []).append(stage)
    for k, names in sorted(kinds.items(), key=lambda kv: -sum(stages[n] for n in kv[1])):
        times = [stages[n] for n in names]
        worst = max(names, key=stages.get)
        print(f"| {k} | {len(names)} | {sum(times):.0f} | {statistics.mean(times):.1f} | "
              f"{worst} {stages[worst]:.1f} |")
    print("\n| fixed cost | seconds |")
    print("|---|---:|")
    for name, value in fixed.items():
        print(f"| {name} | {value:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the project and say where")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="cnnlab-stage-times-"))
    try:
        root, env, command = build_project(base)
        total, stages = timed_run(root, env, command)
        fixed = {"`dvc status` on the finished project": seconds(
            [*DVC, "status"], root, env)}
        for script in ("train", "evaluate", "figures"):
            fixed[f"`python stages/{script}.py --help` (imports)"] = seconds(
                [sys.executable, f"stages/{script}.py", "--help"], root, env)
        print_tables(total, stages, fixed)
    finally:
        if args.keep:
            print(f"\nproject: {base / 'project'}")
        else:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
