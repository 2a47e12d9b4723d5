"""The report stage: Markdown and CSV tables comparing the experiments, from saved metrics only.

Every table is a pure function of a mapping experiment -> Result (its metrics/<exp>.json read as
a MetricsRecord, the names its recipe in params.yaml gives, and the train summary's wall time and
device), so tests can feed fixed results. The keys of that mapping are the experiments
params.yaml defines: a table covers the ones of its study, and lists the study's other
experiments under it as "not in params.yaml yet". `write_report` reads the files and writes every
output at once (OUTPUT_FILES, always the same list) into metrics/report/.

CSVs hold the values as saved (fractions, seconds, counts), one row per defined experiment; a table
with no defined experiment is written as its header line alone. The Markdown formats them (71.96%,
0.7154, 2,122,186, 182.9) and links each experiment's figures relative to the report file."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cnnlab import paths
from cnnlab.atomic import atomic_dir
from cnnlab.config import OptimizerConfig, Params
from cnnlab.report.results import Result, load_results
from cnnlab.report.studies import REPORTED, REPORTED_PARAMS, STUDIES, STUDY_OF
from cnnlab.text_tables import to_markdown

Results = Mapping[str, Result]

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
    value: Callable[[str, Result], object]  # an experiment's value; None when it has none


def _reported(figure: str, header: str) -> Column:
    return Column(f"study_{figure}", header, _pct,
                  lambda exp, r: REPORTED.get(exp, {}).get(figure))


def reported_summary(exp: str) -> str | None:
    """The study's figures for one experiment in a few words: '51.00% val, 98.00% train'."""
    figures = [f"{value:.2%} {name.removesuffix('_accuracy').replace('_', ' ')}"
               for name, value in REPORTED.get(exp, {}).items() if value is not None]
    return ", ".join(figures) or None


EXPERIMENT = Column("experiment", "experiment", _code, lambda exp, r: exp)
MODEL = Column("model", "model", _text, lambda exp, r: r.model)
DATASET = Column("dataset", "dataset", _text, lambda exp, r: r.dataset)
PARAMS = Column("params", "params", _count, lambda exp, r: r.record.params)
TRAINABLE = Column("trainable_params", "trainable params", _count,
                   lambda exp, r: r.record.trainable_params)
STUDY_PARAMS = Column("study_params", "study params", _count,
                      lambda exp, r: REPORTED_PARAMS.get(exp))
EPOCHS = Column("epochs", "epochs", _count, lambda exp, r: r.record.epochs)
TRAIN_IMAGES = Column("train_images", "train images", _count,
                      lambda exp, r: r.record.train_images)
TRAIN_SECONDS = Column("train_seconds", "train seconds", _seconds,
                       lambda exp, r: r.train_seconds)
SPLIT = Column("split", "eval split", _text, lambda exp, r: r.split)
EVAL_IMAGES = Column("eval_images", "eval images", _count, lambda exp, r: r.record.eval_images)
ACCURACY = Column("accuracy", "accuracy", _pct, lambda exp, r: r.record.accuracy)
# Splits scored beside the eval split (also_evaluate); experiments that do not score one have none.
TRAIN_ACCURACY = Column("train_accuracy", "train accuracy", _pct,
                        lambda exp, r: r.record.split_accuracy.get("train"))
VAL_ACCURACY = Column("val_accuracy", "val accuracy", _pct,
                      lambda exp, r: r.record.split_accuracy.get("val"))
# keep_best experiments: the epoch best on the eval split, scored again from its checkpoint
BEST_ACCURACY = Column("best_accuracy", "best-epoch accuracy", _pct,
                       lambda exp, r: r.record.best and r.record.best.accuracy)
BEST_EPOCH = Column("best_epoch", "best epoch", _count,
                    lambda exp, r: r.record.best and r.record.best.epoch)
PRECISION = Column("precision_macro", "macro precision", _frac,
                   lambda exp, r: r.record.precision_macro)
RECALL = Column("recall_macro", "macro recall", _frac, lambda exp, r: r.record.recall_macro)
F1 = Column("f1_macro", "macro F1", _frac, lambda exp, r: r.record.f1_macro)
DEVICE = Column("device", "device", _text, lambda exp, r: r.device)


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


def _table(group: Sequence[str], columns: Sequence[Column], results: Results) -> Table:
    rows = tuple({c.key: c.value(exp, results[exp]) for c in columns}
                 for exp in group if exp in results)
    return Table(tuple(columns), rows, tuple(exp for exp in group if exp not in results))


def ann_vs_cnn_table(results: Results) -> Table:
    """Study 000: accuracy and macro precision, recall and F1 of ann, cnn and cnn_aug."""
    return _table(STUDIES["000"], (EXPERIMENT, SPLIT, ACCURACY, PRECISION, RECALL, F1), results)


def transfer_table(results: Results) -> Table:
    """Study 001: the two ImageNet-pretrained models against the study's test accuracy."""
    columns = (EXPERIMENT, PARAMS, TRAINABLE, TRAIN_IMAGES, EPOCHS, SPLIT, EVAL_IMAGES,
               ACCURACY, _reported("test_accuracy", "study test accuracy"), F1)
    return _table(STUDIES["001"], columns, results)


def hw4_table(results: Results) -> Table:
    """Study 002: params, val and train accuracy of the three nets, each beside the study's."""
    columns = (EXPERIMENT, PARAMS, STUDY_PARAMS, SPLIT, ACCURACY,
               _reported("val_accuracy", "study val accuracy"), TRAIN_ACCURACY,
               _reported("train_accuracy", "study train accuracy"))
    return _table(STUDIES["002"], columns, results)


def deepcnn_table(results: Results) -> Table:
    """Study 003: our best and final epoch's accuracy against the study's (Markdown only)."""
    columns = (EXPERIMENT, PARAMS, STUDY_PARAMS, EPOCHS, TRAIN_SECONDS, SPLIT, BEST_EPOCH,
               BEST_ACCURACY, _reported("best_test_accuracy", "study best test accuracy"),
               Column("accuracy", "final accuracy", _pct, ACCURACY.value),
               _reported("final_test_accuracy", "study final test accuracy"))
    return _table(STUDIES["003"], columns, results)


def optimizer_table(results: Results, optimizers: Mapping[str, str] | None = None) -> Table:
    """Study 004: one dropout CNN per optimizer. `optimizers` labels each experiment's optimizer
    (params.yaml's, e.g. 'sgd, lr 0.01'); metrics files do not record it."""
    optimizers = optimizers or {}
    optimizer = Column("optimizer", "optimizer", _text, lambda exp, r: optimizers.get(exp))
    columns = (EXPERIMENT, optimizer, PARAMS, EPOCHS, TRAIN_SECONDS, SPLIT, ACCURACY,
               _reported("test_accuracy", "study test accuracy"), VAL_ACCURACY,
               _reported("val_accuracy", "study val accuracy"), F1)
    return _table(STUDIES["004"], columns, results)


def all_experiments_table(results: Results) -> Table:
    """Every defined experiment: the studies' ones in study order, then any other."""
    known = [exp for group in STUDIES.values() for exp in group]
    group = known + [exp for exp in results if exp not in STUDY_OF]
    columns = (EXPERIMENT, Column("study", "study", _text, lambda exp, r: STUDY_OF.get(exp)),
               MODEL, DATASET, PARAMS, TRAINABLE, EPOCHS, TRAIN_IMAGES, TRAIN_SECONDS, SPLIT,
               ACCURACY, Column("study_reported", "study reported", _text,
                                lambda exp, r: reported_summary(exp)), DEVICE)
    return _table(group, columns, results)


@dataclass(frozen=True)
class Section:
    key: str  # a study ("000") or "all"
    title: str
    table: Callable[[Results, Mapping[str, str]], Table]
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
the figures the original studies reported. Each experiment is one run
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


def build_tables(results: Results, optimizers: Mapping[str, str] | None = None) -> dict[str, Table]:
    """Every section's table, keyed by study ("000" ... "004") and "all"."""
    return {s.key: s.table(results, optimizers or {}) for s in SECTIONS}


def render_report(results: Results, optimizers: Mapping[str, str] | None = None,
                  metrics_root: str = "..") -> dict[str, str]:
    """Every output file's name and text (OUTPUT_FILES, in that order)."""
    tables = build_tables(results, optimizers)
    files = {REPORT_FILE: render_markdown(tables, metrics_root)}
    files.update({name: tables[key].csv() for key, name in CSV_FILES.items()})
    return files


def optimizer_label(optimizer: OptimizerConfig) -> str:
    """e.g. 'sgd, lr 0.01'; a rate left to the preset is the preset's."""
    return f"{optimizer.name}, lr {optimizer.settings()['lr']:g}"


def write_report(params: Params, out_dir: str | os.PathLike = REPORT_DIR) -> None:
    """Read the results of every experiment params.yaml defines and write OUTPUT_FILES into
    out_dir, replacing it whole."""
    out_dir = Path(out_dir)
    results = load_results(params, list(params.experiments))
    optimizers = {exp: optimizer_label(cfg.optimizer) for exp, cfg in params.experiments.items()}
    metrics_root = Path(os.path.relpath(paths.METRICS, out_dir)).as_posix()
    files = render_report(results, optimizers, metrics_root)
    with atomic_dir(out_dir) as tmp:
        for name, text in files.items():
            (tmp / name).write_text(text, encoding="utf-8")
    pending = [exp for exp in STUDY_OF if exp not in results]
    print(f"wrote {out_dir / REPORT_FILE} and {len(CSV_FILES)} CSVs for {len(results)} "
          f"experiments" + (f" (not in params.yaml yet: {', '.join(pending)})" if pending else ""))
