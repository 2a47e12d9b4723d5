"""Seed sweeps: DVC's experiment table parsed, runs grouped by params, mean ± std checked against
NumPy and the statistics module. tests/test_queue_e2e.py runs the same on a real DVC queue."""

from __future__ import annotations

import statistics

import numpy as np
import pytest

from cnnlab.errors import CnnlabError
from cnnlab.evaluate.record import MetricsRecord
from cnnlab.report.exp_show import ExpTable, Run, parse_exp_show, read_exp_show
from cnnlab.report.seed_summary import markdown, seed_groups, summarize, to_json

BASE = {"experiments": {"cnn": {"seed": 0, "optimizer": {"name": "adam", "lr": 0.001}},
                        "ann": {"seed": 0}},
        "profile": {"max_epochs": None}}


def params(cnn_seed=0, lr=0.001, ann_seed=0) -> dict[str, object]:
    return {"experiments.cnn.seed": cnn_seed, "experiments.cnn.optimizer.name": "adam",
            "experiments.cnn.optimizer.lr": lr, "experiments.ann.seed": ann_seed,
            "profile.max_epochs": None}


def record(accuracy, f1, seed) -> dict[str, object]:
    """metrics/<exp>.json as `dvc exp show --json` gives it: a whole record."""
    return MetricsRecord(accuracy=accuracy, precision_macro=f1, recall_macro=f1, f1_macro=f1,
                         per_class={"a": accuracy, "b": accuracy}, params=10,
                         trainable_params=10, epochs=1, train_images=8, eval_images=4,
                         seed=seed).to_json()


def run(name, seed, accuracy, f1, *, lr=0.001, state="success", created="2026-01-01T00:00:01",
        metrics_seed=None, ann_seed=0, cnn_metrics=None) -> Run:
    """cnn_metrics: metrics/cnn.json as given ("absent": no such file), else a record."""
    cnn = record(accuracy, f1, seed if metrics_seed is None else metrics_seed)
    metrics = {"metrics/cnn.json": cnn if cnn_metrics is None else cnn_metrics,
               "metrics/ann.json": record(0.3, 0.2, ann_seed)}
    if cnn_metrics == "absent":
        del metrics["metrics/cnn.json"]
    return Run(name, name * 4, "b" * 40, created, state, params(seed, lr, ann_seed), metrics)


def table(*runs: Run) -> ExpTable:
    return ExpTable(params(), runs)


def test_summarize_matches_numpy_and_statistics():
    values = [0.61, 0.64, 0.58, 0.66]
    stat = summarize(values)
    assert stat.n == 4 and stat.min == 0.58 and stat.max == 0.66
    assert stat.mean == pytest.approx(statistics.fmean(values), abs=1e-15)
    assert stat.std == pytest.approx(statistics.stdev(values), abs=1e-15)
    assert stat.std == np.std(values, ddof=1)
    one = summarize([0.5])
    assert (one.n, one.mean, one.std) == (1, 0.5, None)


def test_parse_exp_show_reads_params_metrics_and_queue_states():
    def data(seed, metrics=True):
        out = {"rev": "x", "timestamp": f"2026-01-01T00:00:0{seed}",
               "params": {"params.yaml": {"data": {**BASE, "experiments": {
                   **BASE["experiments"], "cnn": {**BASE["experiments"]["cnn"], "seed": seed}}}}},
               "metrics": {"metrics/cnn.json": {"data": {"accuracy": 0.0, "f1_macro": 0.1}},
                           "metrics/ann.json": {"error": {"type": "FileNotFoundError"}}},
               "deps": {}, "outs": {}, "meta": {}}
        if not metrics:
            out.pop("metrics")
        return out

    def executor(state):
        return {"state": state, "name": "dvc-task", "local": {"returncode": 0}}

    rows = [
        {"rev": "workspace", "name": None, "data": data(0), "error": None, "experiments": None},
        {"rev": "c" * 40, "name": "main", "data": data(0), "error": None, "experiments": [
            {"name": "paper-sign", "executor": executor("success"),
             "revs": [{"rev": "1" * 40, "name": "paper-sign", "data": data(1), "error": None}]},
            {"name": "sonic-keek", "executor": executor("queued"),
             "revs": [{"rev": "2" * 40, "name": "sonic-keek", "data": None, "error": None}]},
            {"name": None, "executor": None,  # a failed `dvc exp run` outside the queue
             "revs": [{"rev": "3" * 40, "name": None, "data": data(3, metrics=False),
                       "error": {"msg": "Experiment run failed", "type": ""}}]},
        ]},
    ]
    parsed = parse_exp_show(rows)
    assert parsed.workspace_params["experiments.cnn.optimizer.lr"] == 0.001
    assert parsed.workspace_params["profile.max_epochs"] is None
    done, queued, failed = parsed.runs
    assert (done.name, done.state, done.baseline) == ("paper-sign", "success", "c" * 40)
    assert done.params["experiments.cnn.seed"] == 1 and done.created == "2026-01-01T00:00:01"
    # A metric of 0 stays 0 (dvc.api.exp_show would give None); a missing file is left out.
    assert done.metrics == {"metrics/cnn.json": {"accuracy": 0.0, "f1_macro": 0.1}}
    assert (queued.state, queued.params, queued.metrics) == ("queued", {}, {})
    assert (failed.name, failed.state) == ("3333333", "failed")


def test_groups_by_params_other_than_the_seed():
    runs = [run("a", 1, 0.60, 0.55), run("b", 2, 0.64, 0.61), run("c", 3, 0.59, 0.50),
            run("d", 4, 0.70, 0.69, lr=0.01),  # another recipe: its own group
            run("e", 5, 0.0, 0.0, state="failed"), run("f", 6, 0.0, 0.0, state="queued"),
            run("g", 7, 0.9, 0.9, metrics_seed=0),  # evaluate@cnn did not run: stale metrics
            run("h", 1, 0.60, 0.55, ann_seed=3),  # an ann sweep's run: cnn's seed 1 again
            # A record of an older cnnlab (strings among the numbers) and a run without one.
            run("i", 8, 0.9, 0.9, cnn_metrics={**record(0.9, 0.9, 8), "device": "cpu"}),
            run("j", 9, 0.9, 0.9, cnn_metrics="absent")]
    groups, skipped = seed_groups(table(*runs), ["cnn"])
    main, other = groups
    assert main.seeds == (1, 2, 3) and main.differs == () and main.repeats == 1
    assert main.stats["accuracy"].mean == pytest.approx(np.mean([0.60, 0.64, 0.59]))
    assert main.stats["accuracy"].std == pytest.approx(np.std([0.60, 0.64, 0.59], ddof=1))
    assert main.stats["f1_macro"].std == pytest.approx(statistics.stdev([0.55, 0.61, 0.50]))
    assert (main.stats["f1_macro"].min, main.stats["f1_macro"].max) == (0.50, 0.61)
    assert other.seeds == (4,) and other.differs == ("experiments.cnn.optimizer.lr=0.01",)
    assert skipped["cnn"] == {"failed": 1, "queued or running": 1,
                              "with a stale metrics/cnn.json": 1,
                              "with an unreadable metrics/cnn.json": 1,
                              "without metrics/cnn.json": 1}

    text = markdown(groups, skipped)
    lines = text.splitlines()
    assert lines[0] == "| experiment | n seeds | seeds | accuracy mean ± std | f1 mean ± std |"
    mean, std = np.mean([0.60, 0.64, 0.59]), np.std([0.60, 0.64, 0.59], ddof=1)
    f1_mean, f1_std = np.mean([0.55, 0.61, 0.50]), np.std([0.55, 0.61, 0.50], ddof=1)
    assert lines[2] == (f"| cnn | 3 | 1, 2, 3 | {mean:.4f} ± {std:.4f} | "
                        f"{f1_mean:.4f} ± {f1_std:.4f} |")
    assert lines[3] == ("| cnn (other params: experiments.cnn.optimizer.lr=0.01) | 1 | 4 | "
                        "0.7000 (std undefined: 1 seed) | 0.6900 (std undefined: 1 seed) |")
    assert "Runs of a seed already counted, left out: 1." in lines
    assert ("Runs left out for cnn: 1 failed, 1 queued or running, "
            "1 with a stale metrics/cnn.json, 1 with an unreadable metrics/cnn.json, "
            "1 without metrics/cnn.json.") in lines
    assert to_json(groups)[0]["stats"]["accuracy"]["n"] == 3


def test_the_newest_run_of_a_repeated_seed_is_kept():
    runs = [run("old", 1, 0.50, 0.5, created="2026-01-01T00:00:01"),
            run("new", 1, 0.52, 0.5, created="2026-01-01T00:00:09"), run("b", 2, 0.6, 0.6)]
    (group,), _ = seed_groups(table(*runs), ["cnn"])
    assert group.runs == ("new", "b") and group.repeats == 1
    assert group.stats["accuracy"].mean == pytest.approx(0.56)


def test_without_names_every_swept_experiment_is_shown():
    # A cnn sweep: ann's metrics are the same seed-0 run in every experiment, so no sweep of ann.
    groups, skipped = seed_groups(table(run("a", 1, 0.6, 0.5), run("b", 2, 0.7, 0.6)))
    assert [g.experiment for g in groups] == ["cnn"] and list(skipped) == ["cnn"]


@pytest.mark.parametrize(("runs", "names", "message"), [
    ((), ["cnn"], "no DVC experiments found (queue a seed sweep: dvc exp run --queue "
                  "-S experiments.<exp>.seed=N, then dvc queue start)"),
    ((run("a", 1, 0.6, 0.5),), ["cnnx"], "unknown experiment 'cnnx' (params.yaml has: ann, cnn)"),
    ((run("a", 1, 0.6, 0.5), run("b", 1, 0.6, 0.5)), ["cnn"],
     "cnn: 1 seed per params (1), and std is undefined for fewer than 2 seeds; "
     "dvc exp run --queue -S experiments.cnn.seed=N, then dvc queue start"),
    ((run("a", 1, 0.6, 0.5), run("b", 2, 0.6, 0.5, lr=0.1)), ["cnn"],
     "cnn: 1 seed per params (1, 2 in 2 groups of other params), and std is undefined for "
     "fewer than 2 seeds; dvc exp run --queue -S experiments.cnn.seed=N, then dvc queue start"),
    ((run("a", 1, 0.6, 0.5, state="failed"),), ["cnn"],
     "no finished run of cnn to average (1 failed); "
     "dvc exp run --queue -S experiments.cnn.seed=N, then dvc queue start"),
    ((run("a", 1, 0.6, 0.5),), [],
     "no experiment has 2 or more seeds with equal params, and std is undefined for fewer; "
     "dvc exp run --queue -S experiments.<exp>.seed=N, then dvc queue start"),
])
def test_nothing_to_average_fails_in_one_line(runs, names, message):
    with pytest.raises(CnnlabError) as exc:
        seed_groups(table(*runs), names)
    assert str(exc.value) == message


def test_reading_outside_a_dvc_repository_fails_in_one_line(tmp_path):
    with pytest.raises(CnnlabError, match=r"^`dvc exp show --json` failed: .*not inside of a DVC "
                                          r"repository") as exc:
        read_exp_show(tmp_path)
    assert "\n" not in str(exc.value)
