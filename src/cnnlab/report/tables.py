"""The report stage: Markdown and CSV tables comparing the experiments, from saved metrics only.

Every table is a pure function of a mapping experiment -> metrics dict (the content of
metrics/<exp>.json, plus train_seconds from the train summary), so tests can feed fixed metrics.
The keys of that mapping are the experiments params.yaml defines: a table covers the ones of its
study, and lists the study's other experiments under it as "not in params.yaml yet". `write_report`
reads the metrics files and writes every output at once (OUTPUT_FILES, always the same list) into
metrics/report/.

CSVs hold the values as saved (fractions, seconds, counts), one row per defined experiment; a table
with no defined experiment is written as its header line alone. The Markdown formats them (71.96%,
0.7154, 2,122,186, 182.9) and links each experiment's figures relative to the report file."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cnnlab import paths
from cnnlab.atomic import atomic_dir
from cnnlab.text_tables import to_markdown
from cnnlab.config import OptimizerConfig, Params
from cnnlab.errors import CnnlabError
from cnnlab.report.studies import REPORTED, REPORTED_PARAMS, STUDIES, STUDY_OF

Metrics = Mapping[str, Mapping[str, object]]

REPORT_DIR = paths.METRICS / "report"
REPORT_FILE = "report.md"
CSV_FILES = {
    "000": "study000_ann_vs_cnn.csv",
    "001": "study001_transfer.csv",
    "002": "study002_hw4.csv",
    "004": "study004_optimizers.csv",
    "all": "all_experiments.csv",
}
OUTPUT_FILES = (REPORT_FILE, *CSV_FILES.values())

# What the figures stage writes into metrics/<exp>/figures/, and the study-002 comparison's plots.
EXPERIMENT_FIGURES = {
    "confusion_counts.png": "confusion matrix",
    "loss_steps.png": "training loss",
    "misclassified_16.png": "16 misclassified images",
}
HW4_COMPARISON = paths.comparison_dir("hw4").name
HW4_FIGURES = {"loss_curves.png": "loss curves",
               "grad_norms.png": "gradient norm per layer"}

# Every key of metrics/<exp>.json that some table reads (train_accuracy is optional).
REQUIRED_KEYS = ("accuracy", "precision_macro", "recall_macro", "f1_macro", "params",
                 "trainable_params", "epochs", "train_images", "dataset", "split",
                 "eval_images", "model", "device")
# Read from the train summary (metrics/<exp>/train/metrics.json): timings are kept out of
# metrics/<exp>.json so that it is bit-identical from run to run.
TIMING_KEYS = ("train_seconds",)

MISSING = "—"  # a Markdown cell with no value; the CSV leaves it empty


def _pct(v) -> str:
    return f"{v:.2%}"


def _frac(v) -> str:
    return f"{v:.4f}"


def _count(v) -> str:
    return f"{v:,}"


def _seconds(v) -> str:
    return f"{v:,.1f}"


def _text(v) -> str:
    return str(v).replace("|", "\\|")


def _code(v) -> str:
    return f"`{v}`"


@dataclass(frozen=True)
class Column:
    key: str  # the CSV header
    header: str  # the Markdown header
    fmt: Callable[[object], str]  # a value (never None) as a Markdown cell
    get: Callable[[str, Mapping[str, object]], object] | None = None  # default: metrics[key]

    def value(self, exp: str, metrics: Mapping[str, object]) -> object:
        return metrics.get(self.key) if self.get is None else self.get(exp, metrics)


def _metric(key: str, header: str, fmt: Callable[[object], str]) -> Column:
    return Column(key, header, fmt)


def _reported(figure: str, header: str) -> Column:
    return Column(f"study_{figure}", header, _pct,
                  lambda exp, m: REPORTED.get(exp, {}).get(figure))


def reported_summary(exp: str) -> str | None:
    """The study's figures for one experiment in a few words: '51.00% val, 98.00% train'."""
    figures = [f"{value:.2%} {name.removesuffix('_accuracy').replace('_', ' ')}"
               for name, value in REPORTED.get(exp, {}).items() if value is not None]
    return ", ".join(figures) or None


EXPERIMENT = Column("experiment", "experiment", _code, lambda exp, m: exp)
MODEL = _metric("model", "model", _text)
DATASET = _metric("dataset", "dataset", _text)
PARAMS = _metric("params", "params", _count)
TRAINABLE = _metric("trainable_params", "trainable params", _count)
STUDY_PARAMS = Column("study_params", "study params", _count,
                      lambda exp, m: REPORTED_PARAMS.get(exp))
EPOCHS = _metric("epochs", "epochs", _count)
TRAIN_IMAGES = _metric("train_images", "train images", _count)
TRAIN_SECONDS = _metric("train_seconds", "train seconds", _seconds)
SPLIT = _metric("split", "eval split", _text)
EVAL_IMAGES = _metric("eval_images", "eval images", _count)
ACCURACY = _metric("accuracy", "accuracy", _pct)
TRAIN_ACCURACY = _metric("train_accuracy", "train accuracy", _pct)
VAL_ACCURACY = _metric("val_accuracy", "val accuracy", _pct)
# keep_best experiments: the epoch best on the eval split, scored again from its checkpoint
BEST_ACCURACY = Column("best_accuracy", "best-epoch accuracy", _pct,
                       lambda exp, m: (m.get("best") or {}).get("accuracy"))
BEST_EPOCH = Column("best_epoch", "best epoch", _count,
                    lambda exp, m: (m.get("best") or {}).get("epoch"))
PRECISION = _metric("precision_macro", "macro precision", _frac)
RECALL = _metric("recall_macro", "macro recall", _frac)
F1 = _metric("f1_macro", "macro F1", _frac)
DEVICE = _metric("device", "device", _text)


@dataclass(frozen=True)
class Table:
    columns: tuple[Column, ...]
    rows: tuple[dict[str, object], ...]  # raw values keyed by Column.key, one per experiment
    missing: tuple[str, ...]  # experiments of the group that params.yaml does not define yet

    def csv(self) -> str:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=[c.key for c in self.columns],
                                lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        return out.getvalue()

    def markdown(self) -> str:
        """The Markdown table; empty when no experiment of the group is defined."""
        if not self.rows:
            return ""
        return to_markdown([{c.header: MISSING if row[c.key] is None else c.fmt(row[c.key])
                             for c in self.columns} for row in self.rows])


def _table(group: Sequence[str], columns: Sequence[Column], metrics: Metrics) -> Table:
    rows = tuple({c.key: c.value(exp, metrics[exp]) for c in columns}
                 for exp in group if exp in metrics)
    return Table(tuple(columns), rows, tuple(exp for exp in group if exp not in metrics))


def ann_vs_cnn_table(metrics: Metrics) -> Table:
    """Study 000: accuracy and macro precision, recall and F1 of ann, cnn and cnn_aug."""
    return _table(STUDIES["000"], (EXPERIMENT, SPLIT, ACCURACY, PRECISION, RECALL, F1), metrics)


def transfer_table(metrics: Metrics) -> Table:
    """Study 001: the two ImageNet-pretrained models against the study's test accuracy."""
    columns = (EXPERIMENT, PARAMS, TRAINABLE, TRAIN_IMAGES, EPOCHS, SPLIT, EVAL_IMAGES,
               ACCURACY, _reported("test_accuracy", "study test accuracy"), F1)
    return _table(STUDIES["001"], columns, metrics)


def hw4_table(metrics: Metrics) -> Table:
    """Study 002: params, val and train accuracy of the three nets, each beside the study's."""
    columns = (EXPERIMENT, PARAMS, STUDY_PARAMS, SPLIT, ACCURACY,
               _reported("val_accuracy", "study val accuracy"), TRAIN_ACCURACY,
               _reported("train_accuracy", "study train accuracy"))
    return _table(STUDIES["002"], columns, metrics)


def deepcnn_table(metrics: Metrics) -> Table:
    """Study 003: our best and final epoch's accuracy against the study's (Markdown only)."""
    columns = (EXPERIMENT, PARAMS, STUDY_PARAMS, EPOCHS, TRAIN_SECONDS, SPLIT, BEST_EPOCH,
               BEST_ACCURACY, _reported("best_test_accuracy", "study best test accuracy"),
               Column("accuracy", "final accuracy", _pct),
               _reported("final_test_accuracy", "study final test accuracy"))
    return _table(STUDIES["003"], columns, metrics)


def optimizer_table(metrics: Metrics, optimizers: Mapping[str, str] | None = None) -> Table:
    """Study 004: one dropout CNN per optimizer. `optimizers` labels each experiment's optimizer
    (params.yaml's, e.g. 'sgd, lr 0.01'); metrics files do not record it."""
    optimizers = optimizers or {}
    optimizer = Column("optimizer", "optimizer", _text, lambda exp, m: optimizers.get(exp))
    columns = (EXPERIMENT, optimizer, PARAMS, EPOCHS, TRAIN_SECONDS, SPLIT, ACCURACY,
               _reported("test_accuracy", "study test accuracy"), VAL_ACCURACY,
               _reported("val_accuracy", "study val accuracy"), F1)
    return _table(STUDIES["004"], columns, metrics)


def all_experiments_table(metrics: Metrics) -> Table:
    """Every defined experiment: the studies' ones in EXPERIMENTS.md's order, then any other."""
    known = [exp for group in STUDIES.values() for exp in group]
    group = known + [exp for exp in metrics if exp not in STUDY_OF]
    columns = (EXPERIMENT, Column("study", "study", _text, lambda exp, m: STUDY_OF.get(exp)),
               MODEL, DATASET, PARAMS, TRAINABLE, EPOCHS, TRAIN_IMAGES, TRAIN_SECONDS, SPLIT,
               ACCURACY, Column("study_reported", "study reported", _text,
                                lambda exp, m: reported_summary(exp)), DEVICE)
    return _table(group, columns, metrics)


@dataclass(frozen=True)
class Section:
    key: str  # a study ("000") or "all"
    title: str
    table: Callable[[Metrics, Mapping[str, str]], Table]
    note: str


SECTIONS = (
    Section("000", "Study 000: ANN vs CNN on CIFAR-10",
            lambda m, o: ann_vs_cnn_table(m),
            "The study reported no figures for these three."),
    Section("001", "Study 001: transfer learning on 10% of CIFAR-10",
            lambda m, o: transfer_table(m),
            "ImageNet weights with the last block trainable, trained on a seeded 10% subset of "
            "train (5,000 images) and scored on 10% of test (1,000)."),
    Section("002", "Study 002: three CNNs on COCO 5-class 64x64",
            lambda m, o: hw4_table(m),
            "Scored on the val split. The study's hw4net3 reused one conv layer instance ten "
            "times, hence its 539,013 params; cnnlab gives each layer its own weights."),
    Section("003", "Study 003: deep CNN with batch norm on CIFAR-10",
            lambda m, o: deepcnn_table(m),
            "The study trained 150 epochs and reported its best and its final epoch's test "
            "accuracy."),
    Section("004", "Study 004: optimizers on a dropout CNN",
            optimizer_table,
            "The study trained SGD and then RMSprop on top of the model it had already trained "
            "with Adam, so its SGD and RMSprop figures are not from-scratch results; cnnlab "
            "trains each optimizer from a fresh model."),
    Section("all", "All experiments",
            lambda m, o: all_experiments_table(m),
            "Train seconds are the training loop's wall time on the device shown."),
)

INTRO = """\
# cnnlab report

Built by `dvc repro report` from `metrics/<exp>.json` of every experiment defined in params.yaml;
nothing here is re-evaluated. Accuracy is on each experiment's eval split. The study columns are
the figures the original studies reported (`../shared/EXPERIMENTS.md`). Each experiment is one run
with one seed: treat differences under about a point as noise.
"""


def _names(exps: Sequence[str]) -> str:
    return ", ".join(_code(exp) for exp in exps)


def _figure_links(section: Section, table: Table, metrics_root: str) -> list[str]:
    lines = []
    for row in table.rows:
        exp = row["experiment"]
        links = ", ".join(f"[{label}]({metrics_root}/{exp}/figures/{file})"
                          for file, label in EXPERIMENT_FIGURES.items())
        lines.append(f"- {_code(exp)}: {links}")
    if section.key == "002" and table.rows:
        links = ", ".join(f"[{label}]({metrics_root}/{HW4_COMPARISON}/{file})"
                          for file, label in HW4_FIGURES.items())
        lines.append(f"- the three nets together: {links}")
    return lines


def render_markdown(tables: Mapping[str, Table], metrics_root: str = "..") -> str:
    """The report document. metrics_root is the metrics/ folder relative to the report's folder."""
    parts = [INTRO]
    for section in SECTIONS:
        table = tables[section.key]
        lines = [f"## {section.title}", ""]
        if table.rows:
            lines += [table.markdown().rstrip("\n"), ""]
        if table.missing:
            lines += [f"Not in params.yaml yet: {_names(table.missing)}.", ""]
        lines += [section.note, ""]
        if section.key != "all":
            figures = _figure_links(section, table, metrics_root)
            if figures:
                lines += ["Figures:", "", *figures, ""]
        if section.key in CSV_FILES:
            name = CSV_FILES[section.key]
            lines += [f"CSV: [{name}]({name})", ""]
        parts.append("\n".join(lines))
    return "\n".join(parts).rstrip("\n") + "\n"


def build_tables(metrics: Metrics, optimizers: Mapping[str, str] | None = None) -> dict[str, Table]:
    """Every section's table, keyed by study ("000" ... "004") and "all"."""
    return {s.key: s.table(metrics, optimizers or {}) for s in SECTIONS}


def render_report(metrics: Metrics, optimizers: Mapping[str, str] | None = None,
                  metrics_root: str = "..") -> dict[str, str]:
    """Every output file's name and text (OUTPUT_FILES, in that order)."""
    tables = build_tables(metrics, optimizers)
    files = {REPORT_FILE: render_markdown(tables, metrics_root)}
    files.update({name: tables[key].csv() for key, name in CSV_FILES.items()})
    return files


def load_metrics(experiments: Sequence[str]) -> dict[str, dict[str, object]]:
    """metrics/<exp>.json of each experiment; a missing or incomplete file is a one-line error."""
    missing = [exp for exp in experiments if not paths.metrics_file(exp).is_file()]
    if missing:
        files = ", ".join(str(paths.metrics_file(exp)) for exp in missing)
        targets = " ".join(f"evaluate@{exp}" for exp in missing)
        raise CnnlabError(f"{files} not found (run `dvc repro {targets}` first)")
    metrics = {}
    for exp in experiments:
        record = _read_record(paths.metrics_file(exp), REQUIRED_KEYS, f"evaluate@{exp}")
        timings = _read_record(paths.train_summary(exp), TIMING_KEYS, f"train@{exp}")
        metrics[exp] = {**record, **{key: timings[key] for key in TIMING_KEYS}}
    return metrics


def _read_record(path: Path, required: Sequence[str], stage: str) -> dict[str, object]:
    """A JSON object holding `required`; anything else is a one-line error naming the stage
    that writes it."""
    if not path.is_file():
        raise CnnlabError(f"{path} not found (run `dvc repro {stage}` first)")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CnnlabError(f"{path} is not valid JSON ({exc}); re-run "
                          f"`dvc repro -f {stage}`") from exc
    absent = [key for key in required if not isinstance(record, dict) or key not in record]
    if absent:
        raise CnnlabError(f"{path} lacks {', '.join(absent)}; re-run `dvc repro -f {stage}`")
    return record


def optimizer_label(optimizer: OptimizerConfig) -> str:
    return f"{optimizer.name}, lr {optimizer.lr:g}"


def write_report(params: Params, out_dir: str | os.PathLike = REPORT_DIR) -> None:
    """Read the metrics of every experiment params.yaml defines and write OUTPUT_FILES into
    out_dir, replacing it whole."""
    out_dir = Path(out_dir)
    metrics = load_metrics(list(params.experiments))
    optimizers = {exp: optimizer_label(cfg.optimizer) for exp, cfg in params.experiments.items()}
    metrics_root = Path(os.path.relpath(paths.METRICS, out_dir)).as_posix()
    files = render_report(metrics, optimizers, metrics_root)
    with atomic_dir(out_dir) as tmp:
        for name, text in files.items():
            (tmp / name).write_text(text, encoding="utf-8")
    pending = [exp for exp in STUDY_OF if exp not in metrics]
    print(f"wrote {out_dir / REPORT_FILE} and {len(CSV_FILES)} CSVs for {len(metrics)} "
          f"experiments" + (f" (not in params.yaml yet: {', '.join(pending)})" if pending else ""))
