"""End to end, a seed sweep on DVC's queue: three seeds of a tiny `cnn` are queued with
`dvc exp run --queue -S experiments.cnn.seed=N evaluate@cnn`, run by `dvc queue start -j 2` (celery
workers, each experiment in its own temporary workspace) and summarised by
`python -m cnnlab.report.seed_summary`, whose mean ± std is checked against NumPy over the
metrics `dvc exp show --json` reports."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import readme_commands
import test_pipeline_e2e as pipeline_e2e
from dvc_project import dvc, make_project, run

SEEDS = (1, 2, 3)
pytestmark = pytest.mark.e2e
server = pipeline_e2e.server  # the tiny CIFAR-10 archive over HTTP on 127.0.0.1


def exp_show(root: Path, env: dict) -> list[dict]:
    """The experiments derived from HEAD, as `dvc exp show --json` lists them (raw)."""
    baselines = json.loads(dvc(root, env, "exp", "show", "--json").stdout)
    return [exp for baseline in baselines for exp in baseline.get("experiments") or []]


def wait_for_queue(root: Path, env: dict, count: int, timeout: float) -> list[dict]:
    """Poll until `count` experiments have finished (DVC has no command that blocks on a queue)."""
    deadline = time.monotonic() + timeout
    while True:
        exps = exp_show(root, env)
        states = [(exp.get("executor") or {}).get("state") for exp in exps]
        if len(exps) == count and all(state in ("success", "failed") for state in states):
            return exps
        if time.monotonic() > deadline:
            status = dvc(root, env, "queue", "status", check=False).stdout
            pytest.fail(f"the queue did not finish in {timeout:.0f}s: {states}\n{status}")
        time.sleep(3)


def worker_pids(root: Path) -> list[int]:
    """Queue workers still alive; dvc-task keeps their pids in .dvc/tmp/exps/celery/."""
    alive = []
    for pid_file in (root / ".dvc/tmp/exps/celery").glob("dvc-exp-worker-*.pid"):
        pid = int(pid_file.read_text())
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"queue-worker" in cmdline:  # not a recycled pid
            alive.append(pid)
    return alive


def stop_queue(root: Path, env: dict) -> None:
    """Leave no worker behind: ask them to stop (killing running tasks), then kill stragglers."""
    dvc(root, env, "queue", "stop", "--kill", check=False)
    deadline = time.monotonic() + 30
    while worker_pids(root) and time.monotonic() < deadline:
        time.sleep(1)
    for pid in worker_pids(root):
        os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, server):
    root = tmp_path_factory.mktemp("project")
    env = make_project(root, pipeline_e2e.tiny_cifar(server))
    # The baseline: data prepared and cached once; the queued experiments reuse it.
    dvc(root, env, "repro", "evaluate@cnn")
    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-qm", "baseline"], root, env)
    # The README's seed block as written: queue the seeds, start the workers (its third line,
    # the summary, runs in test_seeds_command_prints_mean_and_std_over_the_sweep).
    queue, start, _ = readme_commands.block("for seed in 1 2 3")
    try:
        started = time.monotonic()
        readme_commands.run_block([queue, start], root, env)
        exps = wait_for_queue(root, env, len(SEEDS), timeout=600)
        yield root, env, exps, time.monotonic() - started
    finally:
        stop_queue(root, env)


def results(exps: list[dict]) -> dict[int, dict]:
    """seed -> metrics/cnn.json of each experiment, straight from DVC's JSON."""
    out = {}
    for exp in exps:
        data = exp["revs"][0]["data"]
        seed = data["params"]["params.yaml"]["data"]["experiments"]["cnn"]["seed"]
        out[seed] = data["metrics"]["metrics/cnn.json"]["data"]
    return out


def test_every_queued_seed_ran_and_trained_differently(sweep):
    root, env, exps, seconds = sweep
    assert [exp["executor"]["state"] for exp in exps] == ["success"] * len(SEEDS), [
        dvc(root, env, "queue", "logs", exp["name"], check=False).stdout for exp in exps]
    assert len({exp["name"] for exp in exps}) == len(SEEDS)
    by_seed = results(exps)
    assert sorted(by_seed) == list(SEEDS)
    for seed, metrics in by_seed.items():
        assert metrics["seed"] == seed and metrics["epochs"] == 1  # evaluate@cnn ran in each
    # The tiny archive's images are random, so test accuracy sits near chance and two seeds may
    # tie on it; the training itself follows the seed, as each run's trained model (an output,
    # with its hash in `dvc exp show --json`) shows.
    models = {exp["revs"][0]["data"]["outs"]["data/models/cnn"]["hash"] for exp in exps}
    assert len(models) == len(SEEDS), models
    print(f"\n{len(SEEDS)} queued experiments finished in {seconds:.0f}s")


def test_seeds_command_prints_mean_and_std_over_the_sweep(sweep, tmp_path):
    root, env, exps, _ = sweep
    by_seed = results(exps)
    accuracy = np.array([by_seed[s]["accuracy"] for s in SEEDS])
    f1 = np.array([by_seed[s]["f1_macro"] for s in SEEDS])
    *_, summary = readme_commands.block("for seed in 1 2 3")
    (named,) = readme_commands.run_block([summary], root, env)  # as the README has it
    seeds_json = root / "seeds.json"
    print("\n" + named.stdout)
    row = (f"| cnn | 3 | 1, 2, 3 | {accuracy.mean():.4f} ± {accuracy.std(ddof=1):.4f} | "
           f"{f1.mean():.4f} ± {f1.std(ddof=1):.4f} |")
    assert named.stdout.splitlines()[:3] == [
        "| experiment | n seeds | seeds | accuracy mean ± std | f1 mean ± std |",
        "|---|---|---|---|---|", row]
    (group,) = json.loads(seeds_json.read_text())
    assert group["seeds"] == list(SEEDS) and group["differs"] == []
    assert sorted(group["runs"]) == sorted(exp["name"] for exp in exps)
    for name, values in (("accuracy", accuracy), ("f1_macro", f1)):
        stat = group["stats"][name]
        assert stat["n"] == 3 and stat["min"] == values.min() and stat["max"] == values.max()
        assert stat["mean"] == pytest.approx(values.mean(), rel=1e-12)
        assert stat["std"] == pytest.approx(values.std(ddof=1), rel=1e-12)

    # Without names: every experiment swept over seeds, here cnn alone.
    swept = run([sys.executable, "-m", "cnnlab.report.seed_summary"], root, env)
    assert swept.stdout.splitlines()[2] == row


@pytest.mark.parametrize(("args", "message"), [
    (["cnnx"], "error: unknown experiment 'cnnx' (params.yaml has: ann, cnn, cnn_aug, deepcnn, "),
    # Only evaluate@cnn ran, in the baseline and in every experiment.
    (["ann"], "error: no finished run of ann to average (3 without metrics/ann.json); "
              "dvc exp run --queue -S experiments.ann.seed=N, then dvc queue start"),
])
def test_seeds_command_fails_in_one_line(sweep, args, message):
    root, env, _, _ = sweep
    result = run([sys.executable, "-m", "cnnlab.report.seed_summary", *args], root, env,
                 check=False)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1


def test_no_queue_worker_is_left_running(sweep):
    root, env, _, _ = sweep
    # Idle workers shut themselves down (dvc-task's 10 s idle timeout); the fixture's teardown
    # stops and kills them when a test fails first.
    deadline = time.monotonic() + 60
    while worker_pids(root) and time.monotonic() < deadline:
        time.sleep(2)
    assert worker_pids(root) == []
    status = dvc(root, env, "queue", "status").stdout
    assert re.search(r"Worker status: 0 active, 0 idle", status), status
