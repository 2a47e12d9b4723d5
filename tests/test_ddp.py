"""Data-parallel training: the ranks' shards of a batch, and the real launcher on the CPU.

`torchrun --standalone --nproc_per_node 2 stages/train.py toy` (Gloo) trains the experiment of
tests/test_resume.py's project on a generated 10-class set, writes its outputs once, scores as
well as one process, and after SIGTERM resumes to the very weights of an uninterrupted run.
"""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from dvc_project import edit_params
from test_resume import outputs, project

from cnnlab.data.loader import DeviceSplit
from cnnlab.data.prepared import PreparedDataset, Split, save_prepared
from cnnlab.errors import CnnlabError
from cnnlab.train.distributed import SINGLE, Parallel, torchrun_group

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = Path(sys.executable).parent / "torchrun"  # the launcher installed beside torch


def test_shards_of_a_batch_are_disjoint_and_cover_it():
    for world in (1, 2, 3, 4):
        for n in (world, 7, 32, 33):
            batch = torch.arange(n)
            shards = [Parallel(rank, world).shard(batch) for rank in range(world)]
            assert torch.equal(torch.cat(shards), batch)  # disjoint, in order, nothing left out
            assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_every_rank_draws_the_same_order_and_takes_its_own_part_of_each_batch():
    labels = np.arange(50)  # each image's label is its index
    split = DeviceSplit(Split(np.zeros((50, 32, 32, 3), np.uint8), labels), torch.device("cpu"))

    def steps(rank: int, world: int) -> list[torch.Tensor]:
        gen = torch.Generator().manual_seed(3)  # every rank seeds the shared stream alike
        return [Parallel(rank, world).shard(y) for _, y in split.batches(16, gen)]

    whole = steps(0, 1)
    ranks = [steps(rank, 2) for rank in range(2)]
    for step, batch in enumerate(whole):
        assert torch.equal(torch.cat([r[step] for r in ranks]), batch)
    assert sorted(torch.cat(whole).tolist()) == list(range(50))


def test_a_batch_too_small_to_share_fails_before_training():
    Parallel(0, 3).check_batches(64, 32)
    with pytest.raises(CnnlabError, match=r"3 processes cannot share a batch of 1 images "
                                          r"\(65 training images, batch_size 32\)"):
        Parallel(1, 3).check_batches(65, 32)
    with pytest.raises(CnnlabError, match="cannot share a batch of 2 images"):
        Parallel(0, 4).check_batches(100, 2)


def test_each_rank_augments_with_its_own_stream_one_process_with_the_shared_one():
    gen = torch.Generator().manual_seed(0)
    assert SINGLE.own_generator(gen, 0) is gen
    draws = [torch.rand(4, generator=Parallel(rank, 2).own_generator(gen, 0)) for rank in (0, 1)]
    assert not torch.equal(draws[0], draws[1])


def test_without_torchrun_there_is_no_process_group(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    with torchrun_group(torch.device("cpu")) as (parallel, device):
        assert parallel is SINGLE and device == torch.device("cpu")
        assert not torch.distributed.is_initialized()


def test_a_half_set_torchrun_environment_fails_in_one_line(monkeypatch):
    for name in ("WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(CnnlabError, match="RANK is set but WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, "
                                          "MASTER_PORT not: start the stage with torchrun"):
        with torchrun_group(torch.device("cpu")):
            pass
    monkeypatch.setenv("WORLD_SIZE", "two")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    with pytest.raises(CnnlabError, match="WORLD_SIZE must be a whole number, got 'two'"):
        with torchrun_group(torch.device("cpu")):
            pass


def noisy_patterns(n: int, seed: int, patterns: np.ndarray) -> Split:
    """Each class a coarse colour pattern, under pixel noise; a quarter of the labels are
    redrawn at random, so the best score is about 0.78 (chance 0.1) and a run that learns less
    shows."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    images = 128 + 40 * patterns[labels] + rng.normal(0, 100, (n, 32, 32, 3))
    relabel = rng.random(n) < 0.25
    labels[relabel] = rng.integers(0, 10, relabel.sum())
    return Split(images.clip(0, 255).astype(np.uint8), labels.astype(np.int64))


def ddp_project(root: Path) -> dict:
    """tests/test_resume.py's project (dropcnn: dropout, MixUp, flip and crop, OneCycle) on
    noisy_patterns, scored on its test split after every epoch."""
    env = project(root)
    patterns = np.random.default_rng(0).normal(0, 1, (10, 4, 4, 3)).repeat(8, 1).repeat(8, 2)
    save_prepared(PreparedDataset("patterns", tuple(f"p{i}" for i in range(10)), {
        "train": noisy_patterns(1600, 1, patterns), "test": noisy_patterns(800, 2, patterns)}),
        root / "data/prepared/cifar10")
    edit_params(root, lambda p: p["experiments"]["toy"].update(eval_each_epoch=True))
    return env


def torchrun(root: Path, env: dict, processes: int) -> subprocess.Popen:
    return subprocess.Popen([str(TORCHRUN), "--standalone", f"--nproc_per_node={processes}",
                             str(ROOT / "stages/train.py"), "toy"], cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> str:
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr
    return stdout


def written(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")
            if p.is_file() and "prepared" not in p.parts and p.name != "params.yaml"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[int, tuple[Path, str]]:
    """processes -> (project root, stdout) of a finished `torchrun --nproc_per_node <n>`."""
    done = {}
    for processes in (1, 2):
        root = tmp_path_factory.mktemp(f"ddp{processes}")
        done[processes] = root, finish(torchrun(root, ddp_project(root), processes))
    return done


def test_two_processes_score_like_one_and_write_the_outputs_once(runs):
    summaries = {n: json.loads((root / "metrics/toy/train/metrics.json").read_text())
                 for n, (root, _) in runs.items()}
    accuracy = {n: s["test_accuracy"] for n, s in summaries.items()}
    print(f"\ntest accuracy after 4 epochs: 1 process {accuracy[1]:.4f}, "
          f"2 processes {accuracy[2]:.4f}")
    assert min(accuracy.values()) > 0.7  # chance is 0.1, the label noise caps it near 0.78
    assert abs(accuracy[1] - accuracy[2]) < 0.05

    (one, _), (two, stdout) = runs[1], runs[2]
    assert written(two) == written(one) == {
        "data/models/toy/final.pt", "metrics/toy/train/metrics.json",
        *(f"metrics/toy/train/plots/metrics/{s}.tsv" for s in (
            "loss", "lr", "epoch/train_loss", "epoch/train_accuracy", "epoch/test_loss",
            "epoch/test_accuracy"))}  # no resume file left, nothing from rank 1
    steps = summaries[2]["steps"]
    assert steps == 4 * 50 == summaries[1]["steps"]  # the global batch is batch_size
    loss_rows = (two / "metrics/toy/train/plots/metrics/loss.tsv").read_text().splitlines()
    assert len(loss_rows) == 1 + steps // 10  # one header, each log point once
    assert stdout.count("toy: trained 4 epochs") == 1 and stdout.count("toy epoch 4/4") == 1
    assert summaries[2]["device"].startswith("2 processes x cpu")


def test_two_processes_stopped_by_sigterm_resume_to_the_same_weights(tmp_path, runs):
    env = ddp_project(tmp_path)
    proc = torchrun(tmp_path, env, 2)
    resume = tmp_path / "data/resume/toy.pt"
    deadline = time.monotonic() + 300
    while not resume.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before it could be interrupted"
    proc.send_signal(signal.SIGTERM)  # torchrun passes it on to both ranks
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "run the stage again to resume" in stderr
    assert written(tmp_path) == {"data/resume/toy.pt"}  # no outputs, no temporaries

    stdout = finish(torchrun(tmp_path, env, 2))
    assert stdout.count("resuming after epoch") == 1  # rank 0 says so; both ranks resume
    assert outputs(tmp_path) == outputs(runs[2][0])  # bit-identical weights, same summary


@pytest.mark.e2e
def test_the_readmes_torchrun_commands_run_as_written(tmp_path):
    """README "Multi-GPU": `torchrun --standalone --nproc_per_node 4 stages/train.py deepcnn`,
    then `dvc commit -f train@deepcnn`, in a DVC project whose deepcnn recipe the test shrinks
    (one epoch on 64 images; here on the CPU, so over Gloo). DVC then holds the outputs."""
    from dvc_project import dvc, make_project
    from readme_commands import block, run_block

    def tiny_deepcnn(params):
        params["experiments"]["deepcnn"].update(epochs=1, batch_size=32, train_subset=64,
                                                eval_subset=32, log_every=1)

    env = make_project(tmp_path, tiny_deepcnn)
    patterns = np.random.default_rng(0).normal(0, 1, (10, 4, 4, 3)).repeat(8, 1).repeat(8, 2)
    save_prepared(PreparedDataset("cifar10", tuple(f"c{i}" for i in range(10)), {
        "train": noisy_patterns(128, 1, patterns), "test": noisy_patterns(64, 2, patterns)}),
        tmp_path / "data/prepared/cifar10")
    launch, commit = block("torchrun --standalone --nproc_per_node 4 stages/train.py deepcnn")
    (trained, _) = run_block([launch, commit], tmp_path, env)
    assert "deepcnn: trained 1 epochs" in trained.stdout and "4 processes" in trained.stdout
    status = dvc(tmp_path, env, "status", "train@deepcnn").stdout
    assert "changed" not in status, status
    assert (tmp_path / "data/models/deepcnn/final.pt").is_file()
