"""Stage scripts turn a CnnlabError into one line and exit 1; devices resolve as documented."""

import subprocess
import sys

import pytest
import torch

from cnnlab.cli import run_stage
from cnnlab.devices import describe_device, resolve_device
from cnnlab.errors import CnnlabError


def test_run_stage_prints_one_line_and_exits_1(capsys):
    def fail():
        raise CnnlabError("source not found: nowhere.tar.gz")

    with pytest.raises(SystemExit) as exit_info:
        run_stage(fail)
    assert exit_info.value.code == 1
    assert capsys.readouterr().err == "error: source not found: nowhere.tar.gz\n"


def test_a_stage_script_with_an_unknown_experiment_fails_cleanly():
    proc = subprocess.run([sys.executable, "stages/train.py", "no_such_exp"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "error: unknown experiment 'no_such_exp' (choose from: ann, cnn, cnn_aug, "
        "hw4net1, hw4net2, hw4net3, hw4net3_shared, vgg16_tl, resnet18_tl, deepcnn, dropcnn_adam, "
        "dropcnn_sgd, dropcnn_rmsprop, dropcnn_sgd_chained, dropcnn_rmsprop_chained)"]


def test_auto_and_cpu_resolve():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in {"cpu", "cuda", "mps"}
    assert describe_device(torch.device("cpu")).startswith("cpu (")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_asked_for_without_a_gpu_is_a_clear_error():
    with pytest.raises(CnnlabError, match="cuda was asked for but no CUDA GPU is available"):
        resolve_device("cuda")
