"""End to end: the real `dvc repro`, `dvc exp run -S` and `dvc metrics diff` in a temporary git
repository, on a tiny generated archive in the official binary format served over real HTTP from
127.0.0.1, so the real download code runs."""

from __future__ import annotations

import hashlib
import json

import pytest
from cifar_archives import write_binary_archive
from dvc_project import dvc, edit_params, make_project, ran_stages, run
from httpserver import LocalServer

STUDY000 = ("ann", "cnn", "cnn_aug")
# The COCO stages are exercised in test_coco_e2e.py; these tests stay on the CIFAR-10 branch.
STUDY000_TARGETS = [f"evaluate@{exp}" for exp in STUDY000]
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    archive = tmp_path_factory.mktemp("mirror") / "cifar-10-binary.tar.gz"
    write_binary_archive(archive, records_per_batch=40)
    with LocalServer({"cifar-10-binary.tar.gz": archive.read_bytes()}) as srv:
        srv.md5 = hashlib.md5(archive.read_bytes()).hexdigest()
        yield srv


def tiny_cifar(server: LocalServer):
    def change(params):
        params["data"]["cifar10"] = {"url": server.url("cifar-10-binary.tar.gz"), "md5": server.md5}
        for name, exp in params["experiments"].items():
            # ann keeps log_every 100: a run shorter than one logging interval must work too.
            exp.update(epochs=1, batch_size=32, log_every=100 if name == "ann" else 2)
    return change


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory, server):
    root = tmp_path_factory.mktemp("project")
    env = make_project(root, tiny_cifar(server))
    result = dvc(root, env, "repro", *STUDY000_TARGETS)
    return root, env, result


def test_repro_runs_every_stage_and_writes_the_contracts(reproduced, server):
    root, _, result = reproduced
    assert ran_stages(result.stdout) == {"download_cifar10", "prepare_cifar10",
                                         *(f"train@{e}" for e in STUDY000),
                                         *(f"evaluate@{e}" for e in STUDY000)}
    assert server.count("cifar-10-binary.tar.gz") >= 1
    meta = json.loads((root / "data/prepared/cifar10/meta.json").read_text())
    assert meta["splits"] == {"train": 200, "test": 40}
    for exp in STUDY000:
        metrics = json.loads((root / f"metrics/{exp}.json").read_text())
        for key in ("accuracy", "precision_macro", "recall_macro", "f1_macro", "params",
                    "train_seconds", "epochs", "dataset", "split", "per_class", "git_rev",
                    "torch_version", "device"):
            assert key in metrics, f"{exp}: {key} missing"
        assert metrics["epochs"] == 1 and metrics["dataset"] == "cifar10"
        assert metrics["split"] == "test" and len(metrics["per_class"]) == 10
        assert (root / f"data/models/{exp}.pt").is_file()
        loss_tsv = root / f"metrics/{exp}/train/plots/metrics/loss.tsv"
        if exp == "ann":
            assert not loss_tsv.exists()  # 7 steps never reach log_every=100
        else:
            loss = loss_tsv.read_text().splitlines()
            assert loss[0].split("\t") == ["step", "loss"] and len(loss) == 1 + 7 // 2
        assert (root / f"metrics/{exp}/eval/loss.png").stat().st_size > 1000
        predictions = (root / f"metrics/{exp}/eval/predictions.csv").read_text().splitlines()
        assert predictions[0] == "index,actual,predicted,confidence" and len(predictions) == 41
        assert (root / f"metrics/{exp}/eval/confusion_matrix.png").stat().st_size > 1000
        report = (root / f"metrics/{exp}/eval/classification_report.csv").read_text().splitlines()
        assert report[0] == "class,precision,recall,f1,support" and len(report) == 1 + 10 + 2


def test_plots_show_draws_the_confusion_matrix_and_loss(reproduced, tmp_path):
    root, env, _ = reproduced
    dvc(root, env, "plots", "show", "-o", str(tmp_path / "plots"))
    page = (tmp_path / "plots" / "index.html").read_text()
    for exp in STUDY000:
        assert f"#metrics_{exp}_eval_predictions_csv" in page  # the confusion matrix
        if exp != "ann":  # ann's run is shorter than one logging interval
            assert f"#metrics_{exp}_train_plots_metrics_loss_tsv" in page
        assert f"#metrics_{exp}_train_plots_metrics_epoch_train_accuracy_tsv" in page


def test_exp_run_reruns_only_the_changed_experiment_and_metrics_diff_shows_it(reproduced):
    root, env, _ = reproduced
    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-qm", "baseline results"], root, env)
    result = dvc(root, env, "exp", "run", "-S", "experiments.cnn.optimizer.lr=0.01",
                 *STUDY000_TARGETS)
    assert ran_stages(result.stdout) == {"train@cnn", "evaluate@cnn"}

    diff = json.loads(dvc(root, env, "metrics", "diff", "--json").stdout)
    assert set(diff) == {"metrics/cnn.json", "metrics/cnn/train/metrics.json"}
    assert diff["metrics/cnn/train/metrics.json"]["train_loss"]["diff"] != 0
    assert "params" not in diff["metrics/cnn.json"]  # same model, other optimizer settings
    shown = dvc(root, env, "exp", "show", "--csv").stdout
    assert "experiments.cnn.optimizer.lr" in shown


def test_bad_md5_fails_the_stage_in_one_line_and_leaves_nothing(tmp_path, server):
    env = make_project(tmp_path, tiny_cifar(server))
    edit_params(tmp_path, lambda p: p["data"]["cifar10"].update(md5="0" * 32))
    result = dvc(tmp_path, env, "repro", "download_cifar10", check=False)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: md5 mismatch")]
    assert len(errors) == 1 and server.md5 in errors[0]
    assert list((tmp_path / "data").glob("raw/*")) == []
