"""The report stage: tables from saved metrics, compared exactly with golden files.

Inputs are invented (plausible, not measured) results for all twelve experiments:
tests/fixtures/report/metrics/<exp>.json, each a metrics record as evaluate@<exp> writes it, and
tests/fixtures/report/train/<exp>.json, the part of its train summary the report reads. The model,
dataset and eval split come from params.yaml. The goldens are the expected outputs, file for file:
  - tests/fixtures/report/full/: render_report with all twelve experiments defined;
  - tests/fixtures/report/current/: write_report with the six experiments params.yaml defined
    when this was written (study 000 and 002), so the other studies show "not in params.yaml yet".

After an intended change to the report, regenerate the goldens and review the diff:
    CNNLAB_UPDATE_GOLDEN=1 .venv/bin/pytest -q tests/test_report.py
    git diff tests/fixtures/report
"""

import copy
import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cnnlab.config import parse_params
from cnnlab.errors import CnnlabError
from cnnlab.evaluate.record import MetricsRecord
from cnnlab.report.results import Result
from cnnlab.report.studies import REPORTED, REPORTED_PARAMS, STUDIES, STUDY_OF
from cnnlab.report.tables import (
    CSV_FILES,
    OUTPUT_FILES,
    REPORT_DIR,
    all_experiments_table,
    ann_vs_cnn_table,
    hw4_table,
    render_report,
    write_report,
)
from cnnlab.schema import ParamsError

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "report"
UPDATE = os.environ.get("CNNLAB_UPDATE_GOLDEN") == "1"
# The twelve experiments of EXPERIMENTS.md's table (the fixtures); the studies' switches come after.
ALL = ["ann", "cnn", "cnn_aug", "vgg16_tl", "resnet18_tl", "hw4net1", "hw4net2", "hw4net3",
       "deepcnn", "dropcnn_adam", "dropcnn_sgd", "dropcnn_rmsprop"]
EVERY = [exp for group in STUDIES.values() for exp in group]
CURRENT = ["ann", "cnn", "cnn_aug", "hw4net1", "hw4net2", "hw4net3"]
OPTIMIZERS = {"dropcnn_adam": "adam, lr 0.001", "dropcnn_sgd": "sgd, lr 0.01",
              "dropcnn_rmsprop": "rmsprop, lr 0.001"}


def fixture_metrics(experiments, params=None) -> dict[str, Result]:
    """The fixture results, as load_results builds them from the files and params.yaml."""
    recipes = params or project_params(experiments)
    results = {}
    for exp in experiments:
        recipe = recipes.experiment(exp)
        train = json.loads((FIXTURES / "train" / f"{exp}.json").read_text(encoding="utf-8"))
        results[exp] = Result(MetricsRecord.read(FIXTURES / "metrics" / f"{exp}.json", exp),
                              recipe.model, recipe.dataset, recipe.eval_split,
                              train["train_seconds"], train["device"], recipe,
                              train.get("train_accuracy"))
    return results


def check_golden(files: dict[str, str], folder: Path) -> None:
    if UPDATE:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for name, text in files.items():
            (folder / name).write_text(text, encoding="utf-8", newline="\n")
    assert sorted(p.name for p in folder.iterdir()) == sorted(files)
    for name, text in files.items():
        expected = (folder / name).read_text(encoding="utf-8")
        assert text == expected, f"{name} differs from {folder / name} (CNNLAB_UPDATE_GOLDEN=1)"


def project_params(experiments):
    """params.yaml of the project with only the named experiments defined (chained ones too)."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    raw["experiments"] = {exp: raw["experiments"][exp] for exp in experiments
                          if exp in raw["experiments"]}
    if "chained" in raw:
        raw["chained"] = {exp: raw["chained"][exp] for exp in experiments if exp in raw["chained"]}
    return parse_params(raw)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """An empty project folder as the working directory, with no metrics of the repo's own."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def copy_metrics(experiments, root: Path) -> None:
    """Each fixture where the pipeline writes it: metrics/<exp>.json, and the timings and device
    in the train summary metrics/<exp>/train/metrics.json."""
    for exp in experiments:
        summary = root / "metrics" / exp / "train" / "metrics.json"
        summary.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(FIXTURES / "train" / f"{exp}.json", summary)
        shutil.copy(FIXTURES / "metrics" / f"{exp}.json", root / "metrics" / f"{exp}.json")


def test_report_of_all_twelve_experiments_matches_golden():
    files = render_report(fixture_metrics(ALL), OPTIMIZERS)
    assert list(files) == list(OUTPUT_FILES)
    check_golden(files, FIXTURES / "full")


def test_write_report_from_metrics_files_matches_golden(workdir, capsys):
    copy_metrics(CURRENT, workdir)
    write_report(project_params(CURRENT), REPORT_DIR)
    written = {p.name: p.read_text(encoding="utf-8") for p in (workdir / REPORT_DIR).iterdir()}
    assert sorted(written) == sorted(OUTPUT_FILES)
    check_golden(written, FIXTURES / "current")
    # Written through a temporary folder that is gone afterwards.
    assert sorted(p.name for p in (workdir / "metrics").iterdir()) == sorted(
        [f"{exp}.json" for exp in CURRENT] + CURRENT + ["report"])
    assert "not in params.yaml yet: vgg16_tl" in capsys.readouterr().out


def test_experiments_not_defined_yet_are_listed_not_dropped():
    files = render_report(fixture_metrics(["ann"]))
    report = files["report.md"]
    section = report.split("## Study 000")[1].split("## Study 001")[0]
    assert "| `ann` |" in section
    assert "Not in params.yaml yet: `cnn`, `cnn_aug`." in section
    optimizers = report.split("## Study 004")[1].split("## All experiments")[0]
    assert "|" not in optimizers  # no table at all
    assert ("Not in params.yaml yet: " + ", ".join(f"`{e}`" for e in STUDIES["004"]) + "."
            in optimizers)
    everything = report.split("## All experiments")[1]
    assert "Not in params.yaml yet: " + ", ".join(f"`{e}`" for e in EVERY[1:]) + "." in everything
    # A table with no defined experiment is its CSV header alone: the file list stays fixed.
    assert files[CSV_FILES["004"]] == ("experiment,optimizer,params,epochs,train_seconds,split,"
                                       "accuracy,study_test_accuracy,val_accuracy,study_val_accuracy,"
                                       "last_epoch_train_accuracy,study_train_accuracy,"
                                       "differs_from_study,f1_macro\n")
    assert ann_vs_cnn_table(fixture_metrics(["ann"])).missing == ("cnn", "cnn_aug")


def test_figures_are_linked_relative_to_the_report_file():
    report = render_report(fixture_metrics(["cnn", "hw4net2"]))["report.md"]
    for name in ("confusion_counts.png", "loss_steps.png", "misclassified_16.png"):
        assert f"(../cnn/figures/{name})" in report
        assert f"(../hw4net2/figures/{name})" in report
        assert "../ann/figures" not in report  # only defined experiments have figures
    assert "(../compare-hw4/loss_curves.png)" in report
    assert "(../compare-hw4/grad_norms.png)" in report
    assert "compare-hw4" not in render_report(fixture_metrics(["cnn"]))["report.md"]


def test_links_follow_the_report_folder(workdir):
    copy_metrics(["cnn"], workdir)
    write_report(project_params(["cnn"]), "out/elsewhere")
    report = (workdir / "out/elsewhere/report.md").read_text(encoding="utf-8")
    assert "(../../metrics/cnn/figures/loss_steps.png)" in report


def test_values_are_formatted_consistently():
    report = render_report(fixture_metrics(ALL), OPTIMIZERS)["report.md"]
    assert "| `cnn` | test | 71.96% | 0.7255 | 0.7196 | 0.7154 |" in report
    assert "| `hw4net3` | 622,245 | 539,013 | val | 50.05% | 56.00% | 61.24% | 58.00% |" in report
    # study 004: val accuracy, then the last epoch's train accuracy, each beside the study's
    assert ("| `dropcnn_adam` | adam, lr 0.001 | 315,722 | 15 | 140.2 | test | 70.55% | 70.12% "
            "| 70.18% | 70.42% | 69.58% | 69.39% | — | 0.7032 |") in report
    assert ("| `dropcnn_sgd` | sgd, lr 0.01 | 315,722 | 15 | 128.9 | test | 55.12% | — | 55.61% "
            "| — | 53.42% | — | — |") in report
    # deepcnn: best epoch and its accuracy beside the study's best, then final beside final
    assert "| 149 | 94.52% | 94.48% | 94.31% | 94.39% |" in report
    assert "39.30% test" in report and "71.40% test" in report


def test_hw4_rows_hold_ours_beside_the_studys():
    rows = hw4_table(fixture_metrics(CURRENT)).rows
    assert [r["experiment"] for r in rows] == ["hw4net1", "hw4net2", "hw4net3"]
    assert rows[0] == {"experiment": "hw4net1", "params": 406885, "study_params": 406885,
                       "split": "val", "accuracy": 0.5235, "study_val_accuracy": 0.51,
                       "train_accuracy": 0.9741, "study_train_accuracy": 0.98,
                       "differs_from_study": None}


def test_hw4net3_shared_is_study_002s_fourth_row_with_the_studys_count_in_both_columns():
    exps = ["hw4net1", "hw4net2", "hw4net3", "hw4net3_shared"]
    rows = hw4_table(fixture_metrics(exps)).rows
    assert [r["experiment"] for r in rows] == exps
    assert {k: rows[3][k] for k in ("params", "study_params", "split", "accuracy",
                                    "study_val_accuracy", "train_accuracy",
                                    "study_train_accuracy")} == {
        "params": 539_013, "study_params": 539_013, "split": "val", "accuracy": 0.4725,
        "study_val_accuracy": 0.56, "train_accuracy": 0.553875, "study_train_accuracy": 0.58}


def test_an_experiment_outside_the_studies_is_in_the_all_experiments_table_only():
    metrics = fixture_metrics(["cnn"])
    metrics["cnn_seed1"] = metrics["cnn"]
    table = all_experiments_table(metrics)
    assert [r["experiment"] for r in table.rows] == ["cnn", "cnn_seed1"]
    assert table.rows[1]["study"] is None and table.rows[1]["study_reported"] is None
    assert "cnn_seed1" not in render_report(metrics)["report.md"].split("## All experiments")[0]


def test_missing_metrics_is_one_line_naming_the_experiment_and_the_command(workdir):
    copy_metrics(["ann", "cnn_aug"], workdir)
    with pytest.raises(CnnlabError) as info:
        write_report(project_params(["ann", "cnn", "cnn_aug"]))
    message = str(info.value)
    assert "\n" not in message
    assert message == "metrics/cnn.json not found (run `dvc repro evaluate@cnn` first)"
    assert not (workdir / REPORT_DIR).exists()


def test_every_missing_metrics_file_is_named_at_once(workdir):
    copy_metrics(["ann"], workdir)
    with pytest.raises(CnnlabError) as info:
        write_report(project_params(["ann", "cnn", "hw4net1"]))
    assert str(info.value) == ("metrics/cnn.json, metrics/hw4net1.json not found "
                               "(run `dvc repro evaluate@cnn evaluate@hw4net1` first)")


CNN_FIXTURE = (FIXTURES / "metrics" / "cnn.json").read_text(encoding="utf-8")


@pytest.mark.parametrize(("text", "message"), [
    ("{not json", r"^metrics/cnn\.json is not valid JSON .*; re-run `dvc repro -f evaluate@cnn`$"),
    ('{"accuracy": 0.5}', r"^metrics/cnn\.json: lacks precision_macro, .*, seed; re-run "
                          r"`dvc repro -f evaluate@cnn`$"),
    # A record of the old shape, strings and all: the stage that writes the new one is named.
    (CNN_FIXTURE.replace('"seed": 0', '"seed": 0, "model": "cnn"'),
     r"^metrics/cnn\.json: model is not a metric of this record; re-run "
     r"`dvc repro -f evaluate@cnn`$"),
    (CNN_FIXTURE.replace('"params": 2122186', '"params": "2M"'),
     r"^metrics/cnn\.json: params is '2M', not a whole number; re-run "),
])
def test_unreadable_metrics_is_one_line(workdir, text, message):
    (workdir / "metrics").mkdir()
    (workdir / "metrics/cnn.json").write_text(text, encoding="utf-8")
    with pytest.raises(CnnlabError, match=message) as info:
        write_report(project_params(["cnn"]))
    assert "\n" not in str(info.value)


def test_train_seconds_and_device_come_from_the_train_summary(workdir):
    copy_metrics(["cnn"], workdir)
    summary = workdir / "metrics/cnn/train/metrics.json"
    summary.write_text('{"train_seconds": 12.25, "device": "2 processes x cpu"}', encoding="utf-8")
    write_report(project_params(["cnn"]))
    rows = (workdir / REPORT_DIR / CSV_FILES["all"]).read_text(encoding="utf-8").splitlines()
    assert rows[0].split(",")[8] == "train_seconds" and rows[1].split(",")[8] == "12.25"
    assert rows[0].split(",")[-1] == "device" and rows[1].split(",")[-1] == "2 processes x cpu"
    summary.write_text('{"train_seconds": 12.25}', encoding="utf-8")
    with pytest.raises(CnnlabError, match=r"^metrics/cnn/train/metrics\.json lacks device as a "
                                          r"name; re-run `dvc repro -f train@cnn`$"):
        write_report(project_params(["cnn"]))
    summary.unlink()
    with pytest.raises(CnnlabError, match=r"^metrics/cnn/train/metrics\.json not found "
                                          r"\(run `dvc repro train@cnn` first\)$"):
        write_report(project_params(["cnn"]))


def test_stage_script_reports_a_missing_metrics_file_as_one_error_line(workdir):
    shutil.copy(ROOT / "params.yaml", workdir / "params.yaml")
    done = subprocess.run([sys.executable, str(ROOT / "stages" / "report.py")], cwd=workdir,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.startswith("error: metrics/ann.json") and done.stderr.count("\n") == 1
    assert "`dvc repro evaluate@ann" in done.stderr


def test_report_is_a_reserved_experiment_name():
    raw = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    data = copy.deepcopy(raw)
    data["experiments"]["report"] = data["experiments"]["cnn"]
    with pytest.raises(ParamsError, match=r"^experiments\.report: the name 'report' is reserved"):
        parse_params(data)


def test_reported_figures_are_those_of_experiments_md():
    assert set(REPORTED) == set(STUDY_OF) == set(EVERY) and len(ALL) == 12
    assert {exp: fig for exp, fig in REPORTED.items() if fig} == {
        "vgg16_tl": {"test_accuracy": 0.393},
        "resnet18_tl": {"test_accuracy": 0.714},
        "hw4net1": {"val_accuracy": 0.51, "train_accuracy": 0.98},
        "hw4net2": {"val_accuracy": 0.54, "train_accuracy": 0.99},
        "hw4net3": {"val_accuracy": 0.56, "train_accuracy": 0.58},
        "hw4net3_shared": {"val_accuracy": 0.56, "train_accuracy": 0.58},
        "deepcnn": {"best_test_accuracy": 0.9448, "final_test_accuracy": 0.9439},
        # study 004's table: train accuracy of the last epoch beside val accuracy
        "dropcnn_adam": {"test_accuracy": 0.7012, "val_accuracy": 0.7042, "train_accuracy": 0.6939},
        "dropcnn_sgd_chained": {"val_accuracy": 0.695, "train_accuracy": 0.6825},
        "dropcnn_rmsprop_chained": {"val_accuracy": 0.6814, "train_accuracy": 0.7068},
    }
    assert REPORTED_PARAMS["hw4net3"] == 539_013 and REPORTED_PARAMS["dropcnn_sgd"] == 315_722
    assert REPORTED_PARAMS["hw4net3_shared"] == 539_013


def capped_project(workdir, experiments, **metrics):
    """The fixtures' metrics files rewritten as a capped run left them (`metrics` replaces their
    counts), and params.yaml's recipes under the quick profile: 1 epoch, at most 1,000 train
    images, and the transfer models on random weights."""
    copy_metrics(experiments, workdir)
    for exp in experiments:
        path = workdir / "metrics" / f"{exp}.json"
        record = json.loads(path.read_text(encoding="utf-8"))
        path.write_text(json.dumps({**record, **metrics}, indent=2), encoding="utf-8")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    raw["experiments"] = {exp: raw["experiments"][exp] for exp in experiments}
    raw.pop("chained", None)
    raw["profile"] = {"max_epochs": 1, "max_train_images": 1000, "max_eval_images": None}
    for exp in ("vgg16_tl", "resnet18_tl"):
        if exp in raw["experiments"]:
            raw["experiments"][exp]["weights"] = "none"
    return parse_params(raw)


def test_a_capped_run_says_what_ran_and_that_it_differs_from_the_study(workdir):
    params = capped_project(workdir, ["cnn", "vgg16_tl"], epochs=1, train_images=1000)
    write_report(params)
    report = (workdir / REPORT_DIR / "report.md").read_text(encoding="utf-8")
    # What ran, from the params (weights, fractions, caps) and the metrics (counts, epochs) ...
    assert ("- `vgg16_tl`: random initial weights, 1 epoch on 1,000 train images (a seeded 10% "
            "of train, at most 1,000), scored on 1,000 test images (a seeded 10% of test). "
            "**(differs from the study: random initial weights (study: ImageNet weights); "
            "1 epoch (study: 5); 1,000 train images (study: 5,000); set by the profile: "
            "max_epochs=1, max_train_images=1000)**") in report
    assert ("- `cnn`: random initial weights, 1 epoch on 1,000 train images (at most 1,000), "
            "scored on 10,000 test images. **(differs from the study: 1 epoch (study: 5); 1,000 "
            "train images (study: 50,000); set by the profile: max_epochs=1, "
            "max_train_images=1000)**") in report
    # ... beside the study's own recipe and figures, in the tables too.
    assert ("The study's recipe: ImageNet weights, 5 epochs on 5,000 train images, scored on "
            "1,000 test images.") in report
    assert ("| 1,000 | 1 | test | 1,000 | 81.20% | 39.30% | random initial weights (study: "
            "ImageNet weights); 1 epoch (study: 5); 1,000 train images (study: 5,000)") in report
    rows = list(csv.DictReader(io.StringIO(
        (workdir / REPORT_DIR / CSV_FILES["all"]).read_text(encoding="utf-8"))))
    assert rows[0]["differs_from_study"].startswith("1 epoch (study: 5); 1,000 train images")
    # The fixed text the report used to print for study 001 whatever had run is gone.
    assert "5,000 images" not in report and "ImageNet weights with the last block" not in report
    assert "ImageNet weights, 5 epochs on 5,000" not in report.split("What ran:")[2]


def test_the_full_recipe_is_not_marked():
    files = render_report(fixture_metrics(ALL), OPTIMIZERS)
    assert "differs from the study:" not in files["report.md"]
    assert "- `vgg16_tl`: ImageNet weights, 5 epochs on 5,000 train images" in files["report.md"]
    for row in csv.DictReader(io.StringIO(files[CSV_FILES["all"]])):
        assert row["differs_from_study"] == "", row["experiment"]


def test_a_weights_file_is_described_not_marked_and_a_smaller_eval_split_is(workdir):
    params = capped_project(workdir, ["vgg16_tl"], eval_images=100)
    raw = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    raw["experiments"] = {"vgg16_tl": {**raw["experiments"]["vgg16_tl"],
                                       "weights": "weights/vgg16.pth", "eval_subset": 100}}
    raw.pop("chained", None)
    write_report(parse_params(raw))
    report = (workdir / REPORT_DIR / "report.md").read_text(encoding="utf-8")
    assert ("- `vgg16_tl`: weights from `weights/vgg16.pth`, 5 epochs on 5,000 train images (a "
            "seeded 10% of train), scored on 100 test images (a seeded 10% of test, at most 100). "
            "**(differs from the study: scored on 100 test images (study: 1,000 test))**") in report
    assert params.profile.max_epochs == 1  # the capped params were not used here


def test_last_epoch_train_accuracy_comes_from_the_train_summary(workdir):
    copy_metrics(["dropcnn_adam"], workdir)
    summary = workdir / "metrics/dropcnn_adam/train/metrics.json"
    write_report(project_params(["dropcnn_adam"]))
    rows = list(csv.DictReader(io.StringIO(
        (workdir / REPORT_DIR / CSV_FILES["004"]).read_text(encoding="utf-8"))))
    assert rows[0]["last_epoch_train_accuracy"] == "0.6958"
    assert rows[0]["study_train_accuracy"] == "0.6939"
    summary.write_text('{"train_seconds": 1.0, "device": "cpu", "train_accuracy": 1.5}',
                       encoding="utf-8")
    with pytest.raises(CnnlabError, match=r"^metrics/dropcnn_adam/train/metrics\.json has "
                                          r"train_accuracy 1\.5, not a fraction in \[0, 1\]; "
                                          r"re-run `dvc repro -f train@dropcnn_adam`$"):
        write_report(project_params(["dropcnn_adam"]))
