"""End to end, every stage, run as the README tells a new user: its offline COCO line unpacks the
real mini subset into local/coco-mini, then its quick-profile command (`dvc exp run -n quick` with
the profile's caps, random transfer weights and local archives) runs both download branches, the
CIFAR-10 and COCO 5-class datasets, every experiment's train, evaluate and figures stages,
compare_hw4 and the report. The test only replaces the README's stand-ins (/data/, <its md5>) with
real files (the real COCO mini archive, a tiny generated CIFAR-10 archive in the official binary
format) and appends -S overrides that shrink batch sizes and log intervals."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil

import cv2
import pytest
import readme_commands
import yaml
from cifar_archives import write_binary_archive
from conftest import real_archive
from dvc_project import dvc, make_project, ran_stages, run

from cnnlab.evaluate.record import MetricsRecord

pytestmark = [pytest.mark.e2e, pytest.mark.realdata]
NETS = ("hw4net1", "hw4net2", "hw4net3", "hw4net3_shared")
COMPARED = NETS  # the compare_hw4 stage's nets
STUDY000 = ("ann", "cnn", "cnn_aug")
TRANSFER = ("vgg16_tl", "resnet18_tl")
DROPCNN = ("dropcnn_adam", "dropcnn_sgd", "dropcnn_rmsprop")
CIFAR = (*STUDY000, *TRANSFER, "deepcnn", *DROPCNN)
CHAINED = ("dropcnn_sgd_chained", "dropcnn_rmsprop_chained")  # params.yaml's chained:
CONV_FIGURES = {"samples_per_class.png", "class_distribution.png", "augmentation_demo.png",
                "input_batch.png", "loss_steps.png", "loss_epochs.png", "accuracy_epochs.png",
                "lr_schedule.png", "confusion_counts.png", "confusion_normalized.png",
                "classification_report.png", "per_class_accuracy.png", "most_confused.png",
                "predictions_correct.png", "predictions_incorrect.png", "misclassified_16.png",
                "filters_conv1.png", "feature_maps.png"}
PARAMS = {"hw4net1": 406_885, "hw4net2": 529_765, "hw4net3": 622_245, "hw4net3_shared": 539_013}


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
    """The files the README's commands name under /data/: the real COCO mini subset, and a tiny
    CIFAR-10 (200 train, 40 test images) in the official binary format."""
    root = tmp_path_factory.mktemp("data")
    shutil.copy(real_archive("coco-mini.tar.gz"), root / "coco-mini.tar.gz")
    write_binary_archive(root / "cifar10-jpeg.tar.gz", records_per_batch=40)
    return root


def md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def tiny_sizes() -> list[str]:
    """The test's own -S overrides on top of the quick profile's caps (1 epoch)."""
    sets = ["data.coco5.workers=4", "data.coco5.retries=1"]
    sets += [f"experiments.{net}.log_every=1" for net in NETS]
    sets += [f"experiments.{exp}.{k}" for exp in CIFAR for k in ("batch_size=32", "log_every=2")]
    # The transfer models see 40x40 crops of 48x48 resizes (not ImageNet's 224 of 256): the
    # same layers and parameter counts, a thirtieth of the convolution work.
    sets += [f"experiments.{exp}.{k}" for exp in TRANSFER
             for k in ("batch_size=8", "eval_fraction=0.25", "preprocess.resize=48",
                       "preprocess.center_crop=40")]
    sets += [f"chained.{exp}.{k}" for exp in CHAINED for k in ("batch_size=32", "log_every=2")]
    return sets


def stand_ins(archives) -> dict[str, str]:
    """The README's /data/ and <its md5> stand-ins, filled in."""
    return {"/data/": f"{archives}/",
            "data.cifar10.md5=<its md5>":
                f"data.cifar10.md5={md5(archives / 'cifar10-jpeg.tar.gz')}",
            "data.coco5.annotations.md5=<its md5>":
                f"data.coco5.annotations.md5={md5(archives / 'coco-mini.tar.gz')}"}


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory, archives):
    root = tmp_path_factory.mktemp("project")
    env = make_project(root, lambda params: None)
    replace = stand_ins(archives)
    unpack = [c for c in readme_commands.block("mkdir -p local/coco-mini") if "tar xzf" in c]
    readme_commands.run_block(unpack, root, env, replace)
    quick = readme_commands.block("dvc exp run -n quick")
    (result,) = readme_commands.run_block(quick, root, env, replace, tiny_sizes())
    return root, result, env


def test_repro_runs_every_stage(reproduced):
    _, result, _ = reproduced
    per_experiment = {f"{stage}@{exp}" for stage in ("train", "evaluate", "figures")
                      for exp in (*CIFAR, *NETS)}
    per_chained = {f"{stage}_chained@{exp}" for stage in ("train", "evaluate", "figures")
                   for exp in CHAINED}
    assert ran_stages(result.stdout) == {"download_cifar10", "prepare_cifar10", "download_coco",
                                         "build_coco5", "compare_hw4", "report", *per_experiment,
                                         *per_chained}


def test_figures_of_every_experiment(reproduced):
    root, _, _ = reproduced
    for exp in (*CIFAR, *NETS, *CHAINED):
        drawn = {p.name for p in (root / f"metrics/{exp}/figures").iterdir()}
        expected = CONV_FIGURES | ({"grad_norms.png"} if exp in NETS else set())
        if exp == "ann":  # no conv layer: no filters or feature maps
            expected -= {"filters_conv1.png", "feature_maps.png"}
        if exp == "deepcnn":  # study 003 showed its first 8 test images with predictions
            expected |= {"predictions_first_8.png"}
        if exp.startswith("dropcnn"):  # study 004: first 5 train, first 3 right and wrong
            expected |= {"train_first_5.png", "correct_first_3.png", "incorrect_first_3.png"}
        assert drawn == expected, exp


def test_report_has_every_study_table_and_links_figures(reproduced):
    root, _, _ = reproduced
    report = (root / "metrics/report/report.md").read_text()
    for exp in (*CIFAR, *NETS, *CHAINED):
        assert f"../{exp}/figures/confusion_counts.png" in report
    assert "../compare-hw4/loss_curves.png" in report
    assert "Not in params.yaml yet" not in report  # every study's experiments are defined
    all_rows = (root / "metrics/report/all_experiments.csv").read_text().splitlines()
    assert len(all_rows) == 1 + 15


def test_recipes_b_d_e_end_to_end(reproduced):
    root, _, _ = reproduced
    metrics = {exp: MetricsRecord.read(root / f"metrics/{exp}.json", exp)
               for exp in (*TRANSFER, "deepcnn", *DROPCNN)}
    # Recipe B: 10% of the 200 train images, 25% of the 40 test images; the study's freezing.
    assert metrics["vgg16_tl"].trainable_params == 126_666_250
    assert metrics["resnet18_tl"].trainable_params == 8_398_858
    for exp in TRANSFER:
        assert (metrics[exp].train_images, metrics[exp].eval_images) == (20, 10)
    # Recipe D: the best epoch's checkpoint is scored beside the final one.
    assert metrics["deepcnn"].best.epoch == 1
    assert metrics["deepcnn"].best.accuracy == metrics["deepcnn"].accuracy
    assert (root / "data/models/deepcnn/best.pt").is_file()
    lrs = (root / "metrics/deepcnn/train/plots/metrics/lr.tsv").read_text().splitlines()[1:]
    assert len({line.split("\t")[-1] for line in lrs}) == len(lrs)  # OneCycle: a new lr each time
    # Recipe E: 20% of train held out as val, scored beside test; Keras' optimizer defaults.
    for exp in DROPCNN:
        assert metrics[exp].train_images == 160 and "val" in metrics[exp].split_accuracy
        val = (root / f"metrics/{exp}/train/plots/metrics/epoch/val_accuracy.tsv")
        assert val.is_file()
    # The optimizers as built, Keras' defaults filled in, recorded beside the metrics.
    optimizers = {exp: json.loads((root / f"metrics/{exp}/eval/provenance.json").read_text())[
        "optimizer"] for exp in DROPCNN}
    assert optimizers["dropcnn_sgd"]["lr"] == 0.01
    assert optimizers["dropcnn_rmsprop"]["alpha"] == 0.9


def test_coco5_hw4_nets_and_their_comparison(reproduced):
    root, _, _ = reproduced
    meta = json.loads((root / "data/prepared/coco5/meta.json").read_text())
    assert meta["classes"] == ["boat", "couch", "dog", "cake", "motorcycle"]
    assert meta["splits"] == {"train": 5, "val": 4}  # motorcycle has a single image

    with open(root / "data/coco5/manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 9 and len({r["image_id"] for r in rows}) == 9
    for jpg in (root / "data/coco5").rglob("*.jpg"):
        image = cv2.imread(str(jpg), cv2.IMREAD_UNCHANGED)
        assert image.shape == (64, 64, 3)

    for net in NETS:
        metrics = MetricsRecord.read(root / f"metrics/{net}.json", net)
        provenance = json.loads((root / f"metrics/{net}/eval/provenance.json").read_text())
        assert provenance["eval_split"] == "val" and provenance["dataset"] == "coco5"
        assert metrics.params == PARAMS[net] and "train" in metrics.split_accuracy
        report = (root / f"metrics/{net}/eval/classification_report.md").read_text()
        assert "| dog |" in report and "| macro avg |" in report
        norms = root / f"metrics/{net}/train/plots/metrics/grad_norm"
        assert {"conv1.tsv", "conv2.tsv", "fc1.tsv", "fc2.tsv"} <= {p.name for p in
                                                                   norms.iterdir()}
    assert len(list((root / "metrics/hw4net3/train/plots/metrics/grad_norm").iterdir())) == 14
    # The study's Net3: one conv (conv3) for all ten repeats, so one gradient norm for it.
    shared = root / "metrics/hw4net3_shared/train/plots/metrics/grad_norm"
    assert {p.name for p in shared.iterdir()} == {"conv1.tsv", "conv2.tsv", "conv3.tsv",
                                                  "fc1.tsv", "fc2.tsv"}

    table = (root / "metrics/compare-hw4/table.md").read_text()
    for net in COMPARED:
        assert f"| {net} | {PARAMS[net]:,} |" in table
    for figure in ("loss_curves.png", "grad_norms.png"):
        assert (root / "metrics/compare-hw4" / figure).stat().st_size > 5000


def test_the_readmes_coco_command_runs_as_written(reproduced, archives):
    """README "Offline sources", COCO: unpack the mini set, then the compare_hw4 run with the
    same COCO settings the quick profile used, so nothing is left to run."""
    root, _, env = reproduced
    _, compare = readme_commands.run_block(readme_commands.block("mkdir -p local/coco-mini"),
                                           root, env, stand_ins(archives))
    assert ran_stages(compare.stdout) == set(), compare.stdout
    assert (root / "metrics/compare-hw4/table.md").is_file()


def test_the_readmes_remote_commands_run_as_written(reproduced, tmp_path):
    """README "Remote storage" after a full run: add a remote, commit, push, then a clone that
    pulls has every output back and nothing left to run. Only the README's stand-ins (the
    remote's folder, <repo>) are filled in."""
    root, _, env = reproduced
    add, push, clone = readme_commands.block("dvc remote add -d storage")
    readme_commands.run_block([add], root, env, {"/mnt/share/cnnlab-dvc": str(tmp_path / "remote")})
    run(["git", "add", "-A"], root, env)  # "commit .dvc/config", with the run's dvc.lock
    run(["git", "commit", "-qm", "a full run and its remote"], root, env)
    readme_commands.run_block([push], root, env)
    (cloned,) = readme_commands.run_block([clone], tmp_path, env, {"<repo>": str(root)})
    assert "Data and pipelines are up to date." in cloned.stdout, cloned.stdout[-2000:]
    for model in ("deepcnn", "dropcnn_rmsprop_chained", "hw4net3_shared"):
        assert (tmp_path / f"elsewhere/data/models/{model}/final.pt").read_bytes() == \
            (root / f"data/models/{model}/final.pt").read_bytes()


def stale_stages(root, env) -> set[str]:
    """The stages `dvc status` says must run again."""
    return set(json.loads(dvc(root, env, "status", "--json").stdout))


def locked_deps(root) -> dict[str, set[str]]:
    """Each stage that ran -> the paths of its deps, as dvc.lock recorded them."""
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    return {name: {d["path"] for d in stage.get("deps", [])}
            for name, stage in lock["stages"].items()}


@pytest.mark.parametrize(("source", "must_rerun", "must_not_rerun"), [
    # A figure's module: figures and the hw4 comparison redraw, nothing retrains or re-scores.
    ("src/cnnlab/report/figures/training.py", {"figures@cnn", "compare_hw4"},
     {"train@cnn", "evaluate@cnn", "report"}),
    # The report's tables: only the report.
    ("src/cnnlab/report/tables.py", {"report"}, {"train@cnn", "evaluate@cnn", "figures@cnn"}),
    # A model file: its training (and what reads the model) runs again; the data stay.
    ("src/cnnlab/models/study000.py", {"train@ann", "train@cnn", "evaluate@cnn"},
     {"prepare_cifar10", "download_cifar10", "report"}),
])
def test_an_edit_reruns_exactly_the_stages_that_import_it(reproduced, source, must_rerun,
                                                           must_not_rerun):
    """Runs last (it edits the project's sources, then puts them back)."""
    root, _, env = reproduced
    assert stale_stages(root, env) == set()  # the full run left everything up to date
    path = root / source
    original = path.read_bytes()
    path.write_bytes(original + b"# an edit\n")
    try:
        stale = stale_stages(root, env)
    finally:
        path.write_bytes(original)
    # Exactly the stages whose dvc.yaml deps hold the file, which tests/test_layout.py keeps
    # equal to each stage script's imports.
    expected = {name for name, deps in locked_deps(root).items() if source in deps}
    print(f"\n$ echo '# an edit' >> {source} && dvc status  # stale:", *sorted(stale))  # -s
    assert stale == expected
    assert must_rerun <= stale and not (must_not_rerun & stale), sorted(stale)

