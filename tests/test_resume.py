"""A training run that is interrupted and run again continues from its last finished epoch and
ends bit-identical, on the CPU, to a run never interrupted: in-process, and for the real stage
script killed with SIGTERM and with SIGKILL."""

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from test_training import RecordingLogger, experiment, separable_dataset

from cnnlab.config import Scheduler
from cnnlab.data.prepared import save_prepared
from cnnlab.train.loop import train
from cnnlab.train.resume import ResumeFile, fingerprint

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


def every_stream(**changes):
    """A recipe that draws from every random stream: shuffling, flip/crop, AutoAugment, MixUp,
    dropout (dropcnn), with a per-batch schedule."""
    exp = experiment(model="dropcnn", epochs=3, mixup_alpha=0.4, log_every=5,
                     scheduler=Scheduler(name="onecycle", max_lr=1e-2),
                     eval_each_epoch=True, keep_best=True)
    return dataclasses.replace(exp, augment=dataclasses.replace(exp.augment,
                                                                autoaugment="cifar10"), **changes)


class Interrupt(Exception):
    pass


class InterruptingLogger(RecordingLogger):
    def __init__(self, at_step):
        super().__init__()
        self.at_step = at_step

    def log_step(self, step, loss, lr):
        if step >= self.at_step:
            raise Interrupt
        super().log_step(step, loss, lr)


def test_interrupted_run_resumes_and_ends_bit_identical(tmp_path):
    exp, data = every_stream(), separable_dataset(n=128)
    reference_log = RecordingLogger()
    reference = train(exp, data, CPU, reference_log, progress=False)

    resume = ResumeFile(tmp_path / "run.pt", fingerprint(exp, "toy", 128))
    with pytest.raises(Interrupt):  # 4 steps an epoch: step 10 is in the middle of epoch 3
        train(exp, data, CPU, InterruptingLogger(at_step=10), progress=False, resume=resume)
    assert resume.load()["step"] == 8  # two epochs were saved
    log = RecordingLogger()
    resumed = train(exp, data, CPU, log, progress=False, resume=resume)

    ref_state, state = reference.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(ref_state[k], state[k]) for k in ref_state)
    assert all(torch.equal(reference.best_state[k], resumed.best_state[k]) for k in state)
    strip = [{k: v for k, v in row.items() if "seconds" not in k and k != "images_per_second"}
             for row in reference.history]
    assert strip == [{k: v for k, v in row.items() if "seconds" not in k
                      and k != "images_per_second"} for row in resumed.history]
    # The logs of the epochs before the interruption are replayed: the series are whole.
    assert log.steps == reference_log.steps and log.lrs == reference_log.lrs
    assert log.epochs == reference_log.epochs


def test_a_saved_state_of_other_settings_is_ignored(tmp_path):
    exp, data = every_stream(epochs=2), separable_dataset(n=64)
    path = tmp_path / "run.pt"
    train(exp, data, CPU, progress=False, resume=ResumeFile(path, fingerprint(exp, "toy", 64)))
    assert path.is_file()  # saved after epoch 1 (the final epoch is the stage's output)
    other = dataclasses.replace(exp, seed=1)
    stale = ResumeFile(path, fingerprint(other, "toy", 64))
    assert stale.load() is None
    path.write_bytes(b"not a checkpoint")  # damaged: start over rather than fail
    assert ResumeFile(path, fingerprint(exp, "toy", 64)).load() is None


def project(root: Path) -> dict:
    """A working directory with a prepared toy dataset and a params.yaml of one experiment."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params.pop("chained", None)  # its experiments start from ones this project lacks
    params["experiments"] = {"toy": {
        "model": "dropcnn", "dataset": "cifar10", "epochs": 4, "batch_size": 32, "seed": 0,
        "optimizer": {"name": "adamw", "lr": 0.002}, "mixup_alpha": 0.4,
        "scheduler": {"name": "onecycle"}, "augment": {"hflip": True, "crop_padding": 4},
        "log_every": 10, "device": "cpu"}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    save_prepared(separable_dataset(n=1500), root / "data/prepared/cifar10")
    return {**os.environ, "PYTHONPATH": str(ROOT / "src")}


def run_train(root: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "stages/train.py"), "toy"], cwd=root,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def outputs(root: Path) -> tuple[bytes, dict]:
    summary = json.loads((root / "metrics/toy/train/metrics.json").read_text())
    timing = {"train_seconds", "seconds_per_epoch", "epoch_seconds", "images_per_second"}
    return ((root / "data/models/toy/final.pt").read_bytes(),
            {k: v for k, v in summary.items() if k not in timing})


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp("reference")
    proc = run_train(root, project(root))
    assert proc.wait(timeout=600) == 0, proc.stderr.read()
    return outputs(root)


def interrupt_after_first_save(root: Path, env: dict, sig: int, settle: float = 0.0
                               ) -> subprocess.Popen:
    """Start the train stage in `root`, wait for its first resume file, wait `settle` seconds
    more, then send `sig`; the process is returned once it has exited."""
    proc = run_train(root, env)
    resume = root / "data/resume/toy.pt"
    deadline = time.monotonic() + 300
    while not resume.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "training finished before it could be interrupted"
    time.sleep(settle)
    proc.send_signal(sig)
    proc.wait(timeout=60)
    return proc


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_stage_killed_mid_run_resumes_to_the_same_result(tmp_path, uninterrupted, sig):
    env = project(tmp_path)
    proc = interrupt_after_first_save(tmp_path, env, sig, settle=0.3)  # into the next epoch
    resume = tmp_path / "data/resume/toy.pt"
    code = proc.returncode
    stderr = proc.stderr.read()
    if sig == signal.SIGTERM:
        assert code == 143 and "terminated (SIGTERM); run the stage again to resume" in stderr
        assert not list(tmp_path.rglob("*.tmp"))  # cleaned up on the way out
    else:
        assert code == -signal.SIGKILL
    # Nothing under a final name: no model, no logs.
    assert not (tmp_path / "data/models/toy").exists()
    assert not (tmp_path / "metrics/toy/train").exists()

    again = run_train(tmp_path, env)
    stdout, stderr = again.communicate(timeout=600)
    assert again.returncode == 0, stderr
    # A resumed run trains only the epochs after the saved one: a restart from scratch would
    # end bit-identical too (CPU determinism), so the epochs it trains tell the two apart.
    saved = int(re.search(r"resuming after epoch (\d+)", stdout).group(1))
    trained = [int(n) for n in re.findall(r"toy epoch (\d+)/4:", stdout)]
    assert 1 <= saved < 4 and trained == list(range(saved + 1, 5)), stdout
    assert outputs(tmp_path) == uninterrupted  # bit-identical weights, same summary
    assert not resume.exists() and not list(tmp_path.rglob("*.tmp"))
