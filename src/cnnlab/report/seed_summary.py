"""Mean ± std of an experiment's accuracy and macro F1 over a sweep of seeds run as DVC experiments.

    dvc exp run --queue -S experiments.cnn.seed=1 evaluate@cnn     (one line per seed)
    dvc queue start -j 2
    python -m cnnlab.report.seed_summary cnn [--json seeds.json]

A group is the runs of one experiment whose params are equal except `experiments.<exp>.seed`
(params of other experiments do not count). Runs with other params form their own group, labelled
with what differs, so no mean ever mixes two recipes. Only DVC experiments count, not the baseline
commit: queue every seed you want.
"""
# Everything but main() is a pure function of the runs; cnnlab.report.exp_show reads them from DVC.

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from cnnlab import paths
from cnnlab.atomic import write_text
from cnnlab.errors import CnnlabError
from cnnlab.evaluate.record import InvalidRecord, MetricsRecord
from cnnlab.report.exp_show import PENDING, ExpTable, Run, parse_exp_show, read_exp_show

# What is averaged over the seeds, by the name the summary gives it.
METRICS: Mapping[str, Callable[[MetricsRecord], float]] = {
    "accuracy": lambda record: record.accuracy,
    "f1_macro": lambda record: record.f1_macro,
}
QUEUE_HINT = "dvc exp run --queue -S experiments.{exp}.seed=N, then dvc queue start"


@dataclass(frozen=True)
class Stat:
    n: int
    mean: float
    std: float | None  # sample std (ddof=1); undefined for one value
    min: float
    max: float


@dataclass(frozen=True)
class Point:
    """One run's result for one experiment."""

    run: str
    created: str
    seed: int
    recipe: Mapping[str, str]  # every param that defines the group, JSON-encoded
    values: Mapping[str, float]  # accuracy, f1_macro


@dataclass(frozen=True)
class SeedGroup:
    experiment: str
    differs: tuple[str, ...]  # "key=value" where the recipe differs from the main group
    seeds: tuple[int, ...]
    runs: tuple[str, ...]  # DVC experiment names, in seed order
    repeats: int  # runs of a seed already counted: only the newest run of each seed is used
    stats: Mapping[str, Stat]  # by metric name


def summarize(values: Sequence[float]) -> Stat:
    a = np.asarray(values, dtype=np.float64)
    return Stat(n=len(a), mean=float(a.mean()), std=float(a.std(ddof=1)) if len(a) > 1 else None,
                min=float(a.min()), max=float(a.max()))


def experiment_names(params: Mapping[str, object]) -> list[str]:
    """The keys of `experiments:` in flattened params."""
    return sorted({key.split(".")[1] for key in params if key.startswith("experiments.")})


def recipe(params: Mapping[str, object], exp: str) -> dict[str, str]:
    """What defines a group of `exp`: every param except its seed and other experiments' params."""
    own = f"experiments.{exp}."
    return {key: json.dumps(value, sort_keys=True) for key, value in params.items()
            if (key.startswith(own) or not key.startswith("experiments."))
            and key != f"{own}seed"}


def collect_points(runs: Sequence[Run], exp: str) -> tuple[list[Point], Counter[str]]:
    """Each finished run's seed and metrics for `exp`, and why the other runs were left out."""
    points, skipped = [], Counter()
    for run in runs:
        seed = run.params.get(f"experiments.{exp}.seed")
        record, left_out = _record(run, exp, seed)
        if left_out:
            skipped[left_out] += 1
        else:
            points.append(Point(run.name, run.created, seed, recipe(run.params, exp) | {
                "baseline": json.dumps(run.baseline[:7])},
                {name: value(record) for name, value in METRICS.items()}))
    return points, skipped


def _record(run: Run, exp: str, seed: object) -> tuple[MetricsRecord | None, str | None]:
    """The run's metrics record of `exp`, or why the run is left out."""
    metrics_file = paths.metrics_file(exp).as_posix()
    if run.state in PENDING:
        return None, "queued or running"
    if run.state != "success":
        return None, "failed"
    if seed is None:
        return None, f"without experiments.{exp}"
    if metrics_file not in run.metrics:
        return None, f"without {metrics_file}"
    try:
        record = MetricsRecord.from_json(run.metrics[metrics_file])
    except InvalidRecord:  # e.g. written by an older cnnlab, before the record held numbers only
        return None, f"with an unreadable {metrics_file}"
    if record.seed != seed:
        # evaluate@<exp> did not run in this experiment: its metrics are another seed's.
        return None, f"with a stale {metrics_file}"
    return record, None


def group_points(points: Sequence[Point], exp: str) -> list[SeedGroup]:
    """Groups of equal recipes, the most seeds (then the newest run) first."""
    by_recipe: dict[str, list[Point]] = {}
    for point in sorted(points, key=lambda p: p.created, reverse=True):
        by_recipe.setdefault(json.dumps(point.recipe, sort_keys=True), []).append(point)
    kept = []
    for runs in by_recipe.values():
        per_seed: dict[int, Point] = {}
        for point in runs:  # newest first: the first run of each seed is the one kept
            per_seed.setdefault(point.seed, point)
        kept.append((sorted(per_seed.values(), key=lambda p: p.seed), len(runs)))
    kept.sort(key=lambda pair: -len(pair[0]))  # stable: the newest group first among equals
    main = kept[0][0][0].recipe if kept else {}
    return [SeedGroup(experiment=exp, differs=_differences(group[0].recipe, main),
                      seeds=tuple(p.seed for p in group), runs=tuple(p.run for p in group),
                      repeats=total - len(group),
                      stats={m: summarize([p.values[m] for p in group]) for m in METRICS})
            for group, total in kept]


def _differences(recipe_: Mapping[str, str], main: Mapping[str, str]) -> tuple[str, ...]:
    keys = sorted(set(recipe_) | set(main))
    return tuple(f"{k}={recipe_.get(k, 'unset')}" for k in keys if recipe_.get(k) != main.get(k))


def seed_groups(table: ExpTable, names: Sequence[str] = ()
                ) -> tuple[list[SeedGroup], dict[str, Counter[str]]]:
    """The groups of the named experiments (of every swept one when none is named), and the runs
    left out per experiment. Raises CnnlabError when there is nothing to average."""
    if not table.runs:
        raise CnnlabError("no DVC experiments found (queue a seed sweep: "
                          + QUEUE_HINT.format(exp="<exp>") + ")")
    known = experiment_names(table.workspace_params)
    for name in names:
        if name not in known:
            raise CnnlabError(f"unknown experiment {name!r} (params.yaml has: {', '.join(known)})")
    groups, skipped = [], {}
    for exp in names or known:
        points, skipped[exp] = collect_points(table.runs, exp)
        exp_groups = group_points(points, exp)
        if names and not exp_groups:
            reasons = ", ".join(f"{n} {why}" for why, n in skipped[exp].items()) or "none ran it"
            raise CnnlabError(f"no finished run of {exp} to average ({reasons}); "
                              + QUEUE_HINT.format(exp=exp))
        if names and len(exp_groups[0].seeds) < 2:
            ran = ", ".join(str(g.seeds[0]) for g in exp_groups)
            where = "" if len(exp_groups) == 1 else f" in {len(exp_groups)} groups of other params"
            raise CnnlabError(f"{exp}: 1 seed per params ({ran}{where}), and std is undefined "
                              "for fewer than 2 seeds; " + QUEUE_HINT.format(exp=exp))
        if exp_groups and len(exp_groups[0].seeds) >= 2:
            groups += exp_groups
    if not groups:
        raise CnnlabError("no experiment has 2 or more seeds with equal params, and std is "
                          "undefined for fewer; " + QUEUE_HINT.format(exp="<exp>"))
    return groups, {exp: skipped[exp] for exp in dict.fromkeys(g.experiment for g in groups)}


def markdown(groups: Sequence[SeedGroup], skipped: Mapping[str, Counter[str]]) -> str:
    lines = ["| experiment | n seeds | seeds | accuracy mean ± std | f1 mean ± std |",
             "|---|---|---|---|---|"]
    for g in groups:
        label = g.experiment + (f" (other params: {', '.join(g.differs)})" if g.differs else "")
        lines.append(f"| {label} | {len(g.seeds)} | {', '.join(map(str, g.seeds))} | "
                     f"{_mean_std(g.stats['accuracy'])} | {_mean_std(g.stats['f1_macro'])} |")
    lines += ["", "Sample std (ddof=1) over DVC experiments, one run per seed (the newest)."]
    repeats = sum(g.repeats for g in groups)
    if repeats:
        lines.append(f"Runs of a seed already counted, left out: {repeats}.")
    for exp, reasons in skipped.items():
        if reasons:
            lines.append(f"Runs left out for {exp}: "
                         + ", ".join(f"{n} {why}" for why, n in sorted(reasons.items())) + ".")
    return "\n".join(lines) + "\n"


def _mean_std(stat: Stat) -> str:
    if stat.std is None:
        return f"{stat.mean:.4f} (std undefined: 1 seed)"
    return f"{stat.mean:.4f} ± {stat.std:.4f}"


def to_json(groups: Sequence[SeedGroup]) -> list[dict[str, object]]:
    return [asdict(g) for g in groups]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cnnlab.report.seed_summary",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiments", nargs="*", metavar="EXP",
                        help="experiments of params.yaml (default: every one swept over seeds)")
    parser.add_argument("--json", metavar="FILE", help="also write the groups as JSON")
    args = parser.parse_args(argv)
    groups, skipped = seed_groups(parse_exp_show(read_exp_show()), args.experiments)
    print(markdown(groups, skipped), end="")
    if args.json:
        write_text(args.json, json.dumps(to_json(groups), indent=2) + "\n")


if __name__ == "__main__":
    from cnnlab.cli import run_stage

    run_stage(main)
