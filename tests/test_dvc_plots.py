"""`dvc plots show` compares the studies' experiments, and draws what it shows readably.

- dvc.yaml's top-level plots put every experiment of params.yaml on its study's plot of each
  metric (training loss, accuracy per epoch, learning rate), exactly once, naming the files the
  training log writes, with the x field those files are written with.
- End to end: training logs written by the real cnnlab.train.training_log for every experiment of
  params.yaml (hand-made values, no training), the real `dvc plots show` over the project's
  dvc.yaml and .dvc/plots templates, and the page it makes drawn by the page's own vega in headless
  Chromium as SVG. What Vega drew is then read back: legends, axis titles and tick labels, the
  vertices of each line and the points.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from html import escape
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from dvc_project import PROJECT, dvc, make_project

from cnnlab.config import Experiment, parse_params
from cnnlab.report.studies import STUDY_OF
from cnnlab.train.loop import epoch_splits
from cnnlab.train.training_log import EPOCH_COLUMN, STEP_COLUMN, training_log

DVC_YAML = yaml.safe_load((PROJECT / "dvc.yaml").read_text(encoding="utf-8"))
PARAMS = parse_params(yaml.safe_load((PROJECT / "params.yaml").read_text(encoding="utf-8")))
TOP_PLOTS = {plot_id: props for entry in DVC_YAML["plots"] for plot_id, props in entry.items()}
SERIES = re.compile(  # a training log series: metrics/<exp>/train/plots/metrics/[epoch/]<name>.tsv
    r"metrics/(?P<exp>\w+)/train/plots/metrics/(?P<epoch>epoch/)?(?P<name>\w+)\.tsv")


def metric_of(y_field: str) -> str:
    """The metric a comparison plot shows: its y field, all accuracies as one."""
    return "accuracy" if y_field.endswith("_accuracy") else y_field


def plotted_series(props: dict) -> list[tuple[str, re.Match]]:
    """(y field, parsed file path) of each file a top-level plot draws."""
    out = []
    for path, y_field in props["y"].items():
        match = SERIES.fullmatch(path)
        assert match, f"{path} is not a series the training log writes"
        out.append((y_field, match))
    return out


def test_every_experiment_is_on_its_studys_plot_of_each_metric_exactly_once():
    named: dict[str, Counter] = defaultdict(Counter)
    for plot_id, props in TOP_PLOTS.items():
        series = plotted_series(props)
        fields = {y for y, _ in series}
        assert len(fields) == 1, f"{plot_id} mixes {sorted(fields)}: one metric per plot"
        experiments = [m["exp"] for _, m in series]
        studies = {STUDY_OF.get(exp, f"no study ({exp})") for exp in experiments}
        assert len(studies) == 1, f"{plot_id} mixes studies {sorted(studies)}"
        named[metric_of(fields.pop())].update(experiments)
    for metric in ("loss", "accuracy", "lr"):
        for exp in PARAMS.all_experiments():
            count = named[metric][exp]
            assert count == 1, f"{exp} is on {count} top-level {metric} plots, not 1"
    for metric, counts in named.items():  # also on any other comparison: no unknown name
        assert set(counts) <= set(PARAMS.all_experiments()), (
            f"{metric} plots name unknown experiments")


def test_each_top_level_plot_reads_a_file_the_training_writes_with_its_x_field():
    for plot_id, props in TOP_PLOTS.items():
        for y_field, match in plotted_series(props):
            exp = PARAMS.experiment(match["exp"])
            assert y_field == match["name"], f"{plot_id}: {match[0]} holds {match['name']}"
            if match["epoch"]:
                written = {f"{s}_{k}" for s in ("train", *epoch_splits(exp))
                           for k in ("loss", "accuracy")}
                assert match["name"] in written, f"{plot_id}: {match['exp']} never logs {y_field}"
            assert props["x"] == (EPOCH_COLUMN if match["epoch"] else STEP_COLUMN), plot_id
            several = len(props["y"]) > 1  # one line per experiment needs the comparison template
            assert props["template"].startswith("compare_") == several, plot_id


def test_each_train_stage_plot_has_the_x_field_of_its_files():
    plots = {path: props for entry in DVC_YAML["stages"]["train"]["do"]["plots"]
             for path, props in entry.items()}
    prefix = "metrics/${key}/train/plots/metrics/"  # what training_log always leaves
    assert set(plots) == {prefix + name for name in ("loss.tsv", "lr.tsv", "grad_norm", "epoch")}
    for path, props in plots.items():
        expected = EPOCH_COLUMN if path.endswith("/epoch") else STEP_COLUMN
        assert props["x"] == expected, f"{path} is written with x {expected!r}"


# ---- end to end ---------------------------------------------------------------------------

STEPS = (100, 200, 300, 400)
EPOCHS = (1, 2, 3)
# Constant rates that DVC's default axis printed as "0", and a one-cycle shape down to 5e-8.
LEARNING_RATES = {"deepcnn": (4.9e-4, 1.2e-2, 6.1e-3, 5e-8), "dropcnn_sgd": (1e-2,) * 4}
CONSTANT_LR = (1e-3,) * 4
CLASSES = ("cat", "dog", "ship")


def write_training_log(root: Path, index: int, name: str, exp: Experiment) -> None:
    """Four loss/lr records and three epochs, distinct per experiment, through the real logger."""
    with training_log(root / f"metrics/{name}/train") as (logger, summary):
        for step, lr in zip(STEPS, LEARNING_RATES.get(name, CONSTANT_LR), strict=True):
            logger.log_step(step, 2.0 - step / 1000 + index / 100, lr)
            if exp.log_grad_norms:
                logger.log_grad_norms(step, {"conv1": 1e-4 / step, "fc1": 0.25})
        for epoch in EPOCHS:
            splits = ("train", *epoch_splits(exp))
            logger.log_epoch(epoch, epoch * 100, {
                **{f"{s}_loss": 1.5 - epoch / 10 for s in splits},
                **{f"{s}_accuracy": 0.2 + epoch / 10 + index / 100 for s in splits}})
        summary.update(train_seconds=1.0)


@pytest.fixture(scope="module")
def shown(tmp_path_factory):
    """(root, `dvc plots show --json` data, the page) over logs of every experiment."""
    root = tmp_path_factory.mktemp("plots")
    env = make_project(root, lambda params: None)
    for index, name in enumerate(PARAMS.all_experiments()):
        write_training_log(root, index, name, PARAMS.experiment(name))
    predictions = root / "metrics/cnn/eval/predictions.csv"
    predictions.parent.mkdir(parents=True)
    predictions.write_text("index,actual,predicted,confidence\n" + "".join(
        f"{i},{CLASSES[i % 3]},{CLASSES[i % 2]},0.5\n" for i in range(6)))
    shown = json.loads(dvc(root, env, "plots", "show", "--json").stdout)
    missing = {e["name"] for e in shown.get("errors", [])}
    assert missing == {f"metrics/{exp}/eval/predictions.csv" for exp in PARAMS.all_experiments()
                       if exp != "cnn"}  # nothing else fails to draw
    dvc(root, env, "plots", "show", "-o", str(root / "page"))
    return root, shown["data"], root / "page" / "index.html"


def spec_of(data: dict, plot_id: str) -> dict:
    (plot,) = data[plot_id]
    return plot["content"]


def is_epoch_plot(plot_id: str) -> bool:
    return "/epoch/" in plot_id or TOP_PLOTS.get(plot_id, {}).get("x") == EPOCH_COLUMN


def test_per_epoch_specs_use_the_epoch_field_with_lines_and_points(shown):
    _, data, _ = shown
    epoch_plots = [plot_id for plot_id in data if is_epoch_plot(plot_id)]
    assert len(epoch_plots) > len(PARAMS.all_experiments())
    for plot_id in epoch_plots:
        spec = spec_of(data, plot_id)
        assert spec["encoding"]["x"]["field"] == EPOCH_COLUMN, plot_id
        assert spec["mark"]["type"] == "line" and spec["mark"]["point"], plot_id
    for plot_id in data:  # each value is drawn where it was logged, not held until the next one
        if plot_id.endswith(".tsv") or plot_id in TOP_PLOTS:
            assert not str(spec_of(data, plot_id)["mark"].get("interpolate")).startswith("step")


@dataclass
class Axis:
    title: str = ""
    labels: list[str] = field(default_factory=list)


@dataclass
class View:
    axes: dict[str, Axis] = field(default_factory=dict)
    legends: dict[str, list[str]] = field(default_factory=dict)
    lines: list[tuple[str, int]] = field(default_factory=list)  # (aria label, vertices)
    points: int = 0
    rects: int = 0


class DrawnViews(HTMLParser):
    """What Vega drew into each `<div data-plot=...>`, from its SVG: axes ('X', 'Y') with their
    title and visible tick labels, legends by title, line paths, point symbols, rects."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "wbr"}

    def __init__(self):
        super().__init__()
        self.views: dict[str, View] = {}
        self.stack: list[dict] = []  # per open tag: its attributes, and what it opened

    def context(self, key: str):
        return next((t[key] for t in reversed(self.stack) if key in t), None)

    def handle_starttag(self, tag, attrs):
        if tag in self.VOID:
            return
        a = dict(attrs)
        opened: dict = {"attrs": a, "tag": tag}
        role = re.search(r"\brole-[\w-]+", a.get("class", ""))
        if role:
            opened["role"] = role.group(0)
        view = self.views.get(self.context("plot")) if self.stack else None
        if "data-plot" in a:
            opened["plot"] = a["data-plot"]
            self.views[a["data-plot"]] = View()
        elif view is not None and role and role.group(0) == "role-axis" and a.get("aria-label"):
            opened["axis"] = view.axes.setdefault(a["aria-label"][0], Axis())  # 'X' or 'Y'
        elif view is not None and role and role.group(0) == "role-legend":
            opened["legend"] = []
        elif view is not None and tag == "path" and self.context("role") == "role-mark":
            self.record_mark(view, a)
        self.stack.append(opened)

    @staticmethod
    def record_mark(view: View, a: dict) -> None:
        kind = a.get("aria-roledescription", "")
        if kind == "line mark":
            view.lines.append((a["aria-label"], len(re.findall(r"[ML]", a["d"]))))
        elif kind == "point":
            view.points += 1
        elif kind == "rect mark":
            view.rects += 1

    def handle_endtag(self, tag):
        if tag in self.VOID or not self.stack:
            return
        closed = self.stack.pop()
        if "legend" in closed:
            view = self.views[self.context("plot")]
            view.legends[closed.get("legend_title", "")] = closed["legend"]

    def handle_data(self, data):
        if not self.stack or self.stack[-1]["tag"] != "text":
            return
        role, visible = self.context("role"), self.stack[-1]["attrs"].get("opacity") != "0"
        axis, legend = self.context("axis"), self.context("legend")
        if role == "role-axis-title" and axis is not None:
            axis.title = data
        elif role == "role-axis-label" and axis is not None and visible:
            axis.labels.append(data)
        elif role == "role-legend-label" and legend is not None:
            legend.append(data)
        elif role == "role-legend-title" and legend is not None:
            next(t for t in reversed(self.stack) if "legend" in t)["legend_title"] = data


def chromium_or_skip() -> str:
    chromium = shutil.which("chromium")
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("no chromium in CI: .ci/run installs Debian's chromium package")
        pytest.skip("no `chromium` binary to draw the plots (apt-get install chromium)")
    return chromium


def headless(chromium: str, page: Path, profile: Path, *args: str) -> str:
    # No host name resolves: the page draws from what it holds (vega inlined) or not at all.
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", "--host-resolver-rules=MAP * ~NOTFOUND",
           "--virtual-time-budget=20000", "--hide-scrollbars", *args, page.as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True).stdout


@pytest.fixture(scope="module")
def drawn(shown, tmp_path_factory) -> dict[str, View]:
    """Every non-empty plot of `dvc plots show`, drawn as SVG by the offline page's vega."""
    chromium = chromium_or_skip()
    root, data, _ = shown
    divs = [f'<div data-plot="{escape(plot_id)}" id="v{i}"></div><script>'
            f'vegaEmbed("#v{i}", {json.dumps(spec_of(data, plot_id))}, {{renderer: "svg"}});'
            f"</script>" for i, plot_id in enumerate(data) if data[plot_id]]
    template = (root / ".dvc/plots/offline.html").read_text(encoding="utf-8")
    page = tmp_path_factory.mktemp("svg") / "views.html"
    page.write_text(template.replace("{refresh_tag}", "").replace("{plot_divs}", "\n".join(divs)),
                    encoding="utf-8")
    parser = DrawnViews()
    parser.feed(headless(chromium, page, page.parent / "profile", "--dump-dom"))
    assert len(parser.views) == len(divs)
    return parser.views


def experiments_of(plot_id: str) -> list[str]:
    return [m["exp"] for _, m in plotted_series(TOP_PLOTS[plot_id])]


def test_each_comparison_draws_one_line_per_experiment_of_its_study(drawn):
    compared = [i for i in TOP_PLOTS if len(TOP_PLOTS[i]["y"]) > 1]
    assert len(compared) == 3 * 4  # studies 000, 001, 002 and 004
    for plot_id in compared:
        view, experiments = drawn[plot_id], experiments_of(plot_id)
        assert sorted(view.legends["experiment"]) == sorted(experiments), plot_id
        named = [re.search(r"experiment: (\w+)", label)[1] for label, _ in view.lines]
        assert sorted(named) == sorted(experiments), plot_id


def test_every_line_has_one_vertex_per_record_and_no_closing_drop(drawn):
    """Drawn as steps, n records made 2n-1 vertices, the last value a vertical segment."""
    for plot_id, view in drawn.items():
        if plot_id.endswith("predictions.csv"):
            continue
        records = len(EPOCHS) if is_epoch_plot(plot_id) else len(STEPS)
        assert view.lines and all(n == records for _, n in view.lines), (plot_id, view.lines)


def test_epochs_are_labelled_as_whole_epochs_and_drawn_with_points(drawn):
    for plot_id, view in drawn.items():
        if is_epoch_plot(plot_id):
            x = view.axes["X"]
            assert x.title == "epoch" and set(x.labels) <= {str(e) for e in range(0, 5)}, x
            assert view.points == len(EPOCHS) * len(view.lines), plot_id
        elif not plot_id.endswith("predictions.csv"):
            assert view.axes["X"].title == "step" and view.points == 0, plot_id


def test_learning_rate_axes_print_the_rates(drawn):
    lr_plots = [i for i in drawn if i.endswith("/lr.tsv") or i.endswith("_lr")]
    assert len(lr_plots) == len(PARAMS.all_experiments()) + 5
    for plot_id in lr_plots:
        rates = {r for name in (experiments_of(plot_id) if plot_id in TOP_PLOTS
                                else [plot_id.split("/")[1]])
                 for r in LEARNING_RATES.get(name, CONSTANT_LR)}
        labels = drawn[plot_id].axes["Y"].labels
        values = [float(label) for label in labels]
        assert len(set(labels)) == len(labels), (plot_id, labels)  # no two ticks print alike
        if len(rates) == 1:  # a constant rate: its one tick prints it (DVC's default said "0")
            assert values == [rates.pop()], (plot_id, labels)
        else:
            assert min(values) <= min(rates) * 10 and max(values) >= max(rates) / 2, labels


def test_the_confusion_matrix_stays(drawn):
    view = drawn["metrics/cnn/eval/predictions.csv"]
    assert view.rects >= 6 and not view.lines  # the 6 (actual, predicted) pairs written
