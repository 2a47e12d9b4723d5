"""The report stage: Markdown and CSV tables comparing the experiments, from saved metrics only.

Every table is a pure function of a mapping experiment -> Result (its metrics/<exp>.json read as
a MetricsRecord, its recipe in params.yaml with the profile's caps applied, and the train
summary's wall time, device and last epoch's training accuracy), so tests can feed fixed
results. The keys of that mapping are the experiments params.yaml defines: a table covers the
ones of its study, and lists the study's other experiments under it as "not in params.yaml yet".
`write_report` reads the files and writes every output at once (OUTPUT_FILES, always the same
list) into metrics/report/.

CSVs hold the values as saved (fractions, seconds, counts), one row per defined experiment; a table
with no defined experiment is written as its header line alone. The Markdown formats them (71.96%,
0.7154, 2,122,186, 182.9) and links each experiment's figures relative to the report file.

Nothing the report says about a run's recipe is fixed text: each study's section states the
study's recipe (STUDY_RECIPES) and then what each run ran, from its params (weights, data
fractions, caps) and its metrics (epochs, train and eval images), and a run that differs from the
study's recipe is marked there and in the tables' "differs from the study's recipe" column."""

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
from cnnlab.report.figure_data import study_views
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
# The train summary's: the last epoch's accuracy over its training batches as trained on (dropout
# on, augmented), the figure Keras' fit() prints and study 004's table shows.
LAST_EPOCH_TRAIN_ACCURACY = Column("last_epoch_train_accuracy", "train accuracy (last epoch)",
                                   _pct, lambda exp, r: r.last_epoch_train_accuracy)


# -- what ran, against the study's recipe ---------------------------------------------------

@dataclass(frozen=True)
class StudyRecipe:
    """What a study trained and scored on: the reference every run of the study is compared
    with, so a capped, shortened or re-weighted run says so beside the study's figures."""

    epochs: int
    train_images: int
    eval_split: str
    eval_images: int
    weights: str  # "imagenet", or "none": trained from random initial weights


STUDY_RECIPES: dict[str, StudyRecipe] = {
    "000": StudyRecipe(5, 50_000, "test", 10_000, "none"),  # recipe A: all of CIFAR-10
    "001": StudyRecipe(5, 5_000, "test", 1_000, "imagenet"),  # recipe B: 10% of train and test
    "002": StudyRecipe(15, 8_000, "val", 2_000, "none"),  # recipe C: 1,600 + 400 per class
    "003": StudyRecipe(150, 50_000, "test", 10_000, "none"),  # recipe D
    "004": StudyRecipe(15, 40_000, "test", 10_000, "none"),  # recipe E: 20% of train held out
}


def _weights(weights: str) -> str:
    return {"imagenet": "ImageNet weights",
            "none": "random initial weights"}.get(weights, f"weights from {_code(weights)}")


def _epochs(n: int) -> str:
    return f"{n:,} epoch" + ("" if n == 1 else "s")


def _share(fraction: float) -> str:
    return f"{fraction * 100:g}%"


def study_recipe_text(study: str) -> str:
    r = STUDY_RECIPES[study]
    return (f"The study's recipe: {_weights(r.weights)}, {_epochs(r.epochs)} on "
            f"{r.train_images:,} train images, scored on {r.eval_images:,} {r.eval_split} images.")


def recipe_differences(exp: str, r: Result) -> str | None:
    """How the run differs from its study's recipe in a few words, with the profile settings
    that made it so: '1,000 train images (study: 50,000); 1 epoch (study: 5)'. None when it
    does not differ, or the experiment belongs to no study. A weights file is not compared: it
    may hold the study's ImageNet weights (the offline way to run study 001)."""
    study = STUDY_RECIPES.get(STUDY_OF.get(exp, ""))
    if study is None:
        return None
    weights, record, diffs = r.recipe.weights, r.record, []
    # A chained run starts from another run's model, as study 004's SGD and RMSprop runs did.
    chained = r.recipe.init_from is not None
    if not chained and weights in ("imagenet", "none") and weights != study.weights:
        diffs.append(f"{_weights(weights)} (study: {_weights(study.weights)})")
    if record.epochs != study.epochs:
        diffs.append(f"{_epochs(record.epochs)} (study: {study.epochs:,})")
    if record.train_images != study.train_images:
        diffs.append(f"{record.train_images:,} train images (study: {study.train_images:,})")
    if (r.split, record.eval_images) != (study.eval_split, study.eval_images):
        diffs.append(f"scored on {record.eval_images:,} {r.split} images (study: "
                     f"{study.eval_images:,} {study.eval_split})")
    if diffs and r.profile_caps:
        diffs.append("set by the profile: " + ", ".join(r.profile_caps))
    return "; ".join(diffs) or None


def _selection(parts: Sequence[tuple[bool, str]]) -> str:
    shown = [text for given, text in parts if given]
    return f" ({', '.join(shown)})" if shown else ""


def run_summary(exp: str, r: Result) -> str:
    """One experiment's run in a sentence, from its recipe and its metrics, marked where it
    differs from its study's recipe."""
    recipe, record = r.recipe, r.record
    init = " (Glorot uniform, as Keras)" if recipe.init == "glorot_uniform" else ""
    start = (f"{_code(recipe.init_from)}'s trained model" if recipe.init_from is not None
             else f"{_weights(recipe.weights)}{init}")
    train = _selection((
        (recipe.val_fraction > 0, f"{_share(recipe.val_fraction)} of train held out as val"),
        (recipe.train_fraction < 1, f"a seeded {_share(recipe.train_fraction)} of train"),
        (recipe.train_subset is not None, f"at most {recipe.train_subset or 0:,}")))
    scored = _selection((
        (recipe.eval_fraction < 1, f"a seeded {_share(recipe.eval_fraction)} of {r.split}"),
        (recipe.eval_subset is not None, f"at most {recipe.eval_subset or 0:,}")))
    text = (f"{_code(exp)}: {start}, {_epochs(record.epochs)} on "
            f"{record.train_images:,} train images{train}, scored on {record.eval_images:,} "
            f"{r.split} images{scored}.")
    differs = recipe_differences(exp, r)
    return text + (f" **(differs from the study: {differs})**" if differs else "")


DIFFERS = Column("differs_from_study", "differs from the study's recipe", _text,
                 recipe_differences)


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
    return _table(STUDIES["000"], (EXPERIMENT, SPLIT, ACCURACY, PRECISION, RECALL, F1, DIFFERS),
                  results)


def transfer_table(results: Results) -> Table:
    """Study 001: the two ImageNet-pretrained models against the study's test accuracy."""
    columns = (EXPERIMENT, PARAMS, TRAINABLE, TRAIN_IMAGES, EPOCHS, SPLIT, EVAL_IMAGES,
               ACCURACY, _reported("test_accuracy", "study test accuracy"), DIFFERS, F1)
    return _table(STUDIES["001"], columns, results)


def hw4_table(results: Results) -> Table:
    """Study 002: params, val and train accuracy of the three nets, each beside the study's."""
    columns = (EXPERIMENT, PARAMS, STUDY_PARAMS, SPLIT, ACCURACY,
               _reported("val_accuracy", "study val accuracy"), TRAIN_ACCURACY,
               _reported("train_accuracy", "study train accuracy"), DIFFERS)
    return _table(STUDIES["002"], columns, results)


def deepcnn_table(results: Results) -> Table:
    """Study 003: our best and final epoch's accuracy against the study's (Markdown only)."""
    columns = (EXPERIMENT, PARAMS, STUDY_PARAMS, EPOCHS, TRAIN_SECONDS, SPLIT, BEST_EPOCH,
               BEST_ACCURACY, _reported("best_test_accuracy", "study best test accuracy"),
               Column("accuracy", "final accuracy", _pct, ACCURACY.value),
               _reported("final_test_accuracy", "study final test accuracy"), DIFFERS)
    return _table(STUDIES["003"], columns, results)


def optimizer_table(results: Results, optimizers: Mapping[str, str] | None = None) -> Table:
    """Study 004: one dropout CNN per optimizer. `optimizers` labels each experiment's optimizer
    (params.yaml's, e.g. 'sgd, lr 0.01'); metrics files do not record it."""
    optimizers = optimizers or {}
    optimizer = Column("optimizer", "optimizer", _text, lambda exp, r: optimizers.get(exp))
    columns = (EXPERIMENT, optimizer, PARAMS, EPOCHS, TRAIN_SECONDS, SPLIT, ACCURACY,
               _reported("test_accuracy", "study test accuracy"), VAL_ACCURACY,
               _reported("val_accuracy", "study val accuracy"), LAST_EPOCH_TRAIN_ACCURACY,
               _reported("train_accuracy", "study train accuracy (last epoch)"), DIFFERS, F1)
    return _table(STUDIES["004"], columns, results)


def all_experiments_table(results: Results) -> Table:
    """Every defined experiment: the studies' ones in study order, then any other."""
    known = [exp for group in STUDIES.values() for exp in group]
    group = known + [exp for exp in results if exp not in STUDY_OF]
    columns = (EXPERIMENT, Column("study", "study", _text, lambda exp, r: STUDY_OF.get(exp)),
               MODEL, DATASET, PARAMS, TRAINABLE, EPOCHS, TRAIN_IMAGES, TRAIN_SECONDS, SPLIT,
               ACCURACY, Column("study_reported", "study reported", _text,
                                lambda exp, r: reported_summary(exp)), DIFFERS, DEVICE)
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
            "As in the study, only the last block of each pretrained model (VGG16's "
            "features[24:], ResNet18's layer4) and the new classifier are trainable."),
    Section("002", "Study 002: three CNNs on COCO 5-class 64x64",
            lambda m, o: hw4_table(m),
            "The study's hw4net3 reused one conv layer instance ten "
            "times, hence its 539,013 params; cnnlab gives each layer its own weights, and "
            "hw4net3_shared is the study's shared version."),
    Section("003", "Study 003: deep CNN with batch norm on CIFAR-10",
            lambda m, o: deepcnn_table(m),
            "The study reported its best and its final epoch's test accuracy."),
    Section("004", "Study 004: optimizers on a dropout CNN",
            optimizer_table,
            "The study trained SGD and then RMSprop on top of the model it had already trained "
            "with Adam: its SGD and RMSprop figures belong to dropcnn_sgd_chained and "
            "dropcnn_rmsprop_chained (params.yaml's chained:, each starting from its init_from "
            "model), while dropcnn_sgd and dropcnn_rmsprop train from scratch, a comparison "
            "of optimizers the study did not make. Train accuracy (last epoch) is the "
            "accuracy over the last epoch's training batches as they were trained on (dropout "
            "on), the figure Keras printed and the study's table shows."),
    Section("all", "All experiments",
            lambda m, o: all_experiments_table(m),
            "Train seconds are the training loop's wall time on the device shown."),
)

INTRO = """\
# cnnlab report

Built by `dvc repro report` from `metrics/<exp>.json` of every experiment defined in params.yaml;
nothing here is re-evaluated. Accuracy is on each experiment's eval split. The study columns are
the figures the original studies reported. Each study's section says what its runs ran, and marks
a run that differs from the study's recipe. Each experiment is one run
with one seed: treat differences under about a point as noise.
"""


def _names(exps: Sequence[str]) -> str:
    return ", ".join(_code(exp) for exp in exps)


def _figure_links(section: Section, table: Table, metrics_root: str) -> list[str]:
    """Each experiment's common figures, then those showing what its study showed."""
    lines = []
    for row in table.rows:
        exp = row["experiment"]
        files = {**EXPERIMENT_FIGURES, **study_views(exp).files()}
        links = ", ".join(f"[{label}]({metrics_root}/{exp}/figures/{file})"
                          for file, label in files.items())
        lines.append(f"- {_code(exp)}: {links}")
    if section.key == "002" and table.rows:
        links = ", ".join(f"[{label}]({metrics_root}/{HW4_COMPARISON}/{file})"
                          for file, label in HW4_FIGURES.items())
        lines.append(f"- the three nets together: {links}")
    return lines


def _what_ran(section: Section, table: Table, results: Results) -> list[str]:
    """The study's recipe, then each of its runs as it ran (from its params and metrics)."""
    if section.key not in STUDY_RECIPES:
        return []
    lines = [study_recipe_text(section.key), ""]
    runs = [f"- {run_summary(row['experiment'], results[row['experiment']])}"
            for row in table.rows]
    return lines + (["What ran:", "", *runs, ""] if runs else [])


def render_markdown(tables: Mapping[str, Table], results: Results,
                    metrics_root: str = "..") -> str:
    """The report document. metrics_root is the metrics/ folder relative to the report's folder."""
    parts = [INTRO]
    for section in SECTIONS:
        table = tables[section.key]
        lines = [f"## {section.title}", ""]
        if table.rows:
            lines += [table.markdown().rstrip("\n"), ""]
        if table.missing:
            lines += [f"Not in params.yaml yet: {_names(table.missing)}.", ""]
        lines += [*_what_ran(section, table, results), section.note, ""]
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
    files = {REPORT_FILE: render_markdown(tables, results, metrics_root)}
    files.update({name: tables[key].csv() for key, name in CSV_FILES.items()})
    return files


def optimizer_label(optimizer: OptimizerConfig) -> str:
    """e.g. 'sgd, lr 0.01'; a rate left to the preset is the preset's."""
    return f"{optimizer.name}, lr {optimizer.settings()['lr']:g}"


def write_report(params: Params, out_dir: str | os.PathLike = REPORT_DIR) -> None:
    """Read the results of every experiment params.yaml defines and write OUTPUT_FILES into
    out_dir, replacing it whole."""
    out_dir = Path(out_dir)
    every = params.all_experiments()
    results = load_results(params, list(every))
    optimizers = {exp: optimizer_label(cfg.optimizer) for exp, cfg in every.items()}
    metrics_root = Path(os.path.relpath(paths.METRICS, out_dir)).as_posix()
    files = render_report(results, optimizers, metrics_root)
    with atomic_dir(out_dir) as tmp:
        for name, text in files.items():
            (tmp / name).write_text(text, encoding="utf-8")
    pending = [exp for exp in STUDY_OF if exp not in results]
    print(f"wrote {out_dir / REPORT_FILE} and {len(CSV_FILES)} CSVs for {len(results)} "
          f"experiments" + (f" (not in params.yaml yet: {', '.join(pending)})" if pending else ""))
