"""End to end, DVC remote storage with a local-directory remote: after a tiny `dvc repro`,
`dvc push` and `dvc pull` into a fresh `git clone` restore the raw and prepared data, the model
checkpoints and every other output byte for byte, and `dvc status` there finds nothing to run. A
pull from an empty or missing remote fails with DVC's own message."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import readme_commands
import test_pipeline_e2e as pipeline_e2e
from dvc_project import PROJECT, dvc, make_project, run

pytestmark = pytest.mark.e2e
server = pipeline_e2e.server  # the tiny CIFAR-10 archive over HTTP on 127.0.0.1
EXP = "ann"  # the fastest experiment: download, prepare, train and evaluate in seconds


def files(root: Path) -> dict[str, bytes]:
    """Every file under data/ and metrics/, by path relative to root."""
    return {path.relative_to(root).as_posix(): path.read_bytes()
            for folder in ("data", "metrics") for path in sorted((root / folder).rglob("*"))
            if path.is_file()}


@pytest.fixture(scope="module")
def pushed(tmp_path_factory, server):
    root = tmp_path_factory.mktemp("project")
    env = make_project(root, pipeline_e2e.tiny_cifar(server))
    # As on a machine that writes bytecode: the stages leave src/cnnlab/__pycache__ behind, which
    # the project's .dvcignore keeps out of the hashes of the src/cnnlab dependency.
    env = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    shutil.copy(PROJECT / ".dvcignore", root / ".dvcignore")
    dvc(root, env, "repro", f"evaluate@{EXP}")
    assert list((root / "src/cnnlab").glob("__pycache__/*.pyc"))
    remote = tmp_path_factory.mktemp("remote")
    # The README's remote block, its first two lines (the whole block runs after a full run in
    # tests/test_full_pipeline_e2e.py).
    add, push, _ = readme_commands.block("dvc remote add -d storage")
    readme_commands.run_block([add], root, env, {"/mnt/share/cnnlab-dvc": str(remote)})
    # dvc.lock names every output's hash, .dvc/config the remote: a clone gets both from git.
    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-qm", "results and remote"], root, env)
    (pushed_,) = readme_commands.run_block([push], root, env)
    return root, env, remote, pushed_


def clone(root: Path, to: Path, env: dict) -> Path:
    run(["git", "clone", "-q", str(root), str(to)], root.parent, env)
    return to


def test_pull_into_a_fresh_clone_restores_data_and_models(pushed, tmp_path):
    root, env, remote, push = pushed
    assert "files pushed" in push.stdout and any(p.is_file() for p in remote.rglob("*"))
    original = files(root)
    for path in ("data/raw/cifar10.archive", "data/prepared/cifar10/train_images.npy",
                 "data/prepared/cifar10/meta.json", f"data/models/{EXP}/final.pt",
                 f"metrics/{EXP}/eval/predictions.csv", f"metrics/{EXP}/train/metrics.json",
                 f"metrics/{EXP}.json"):
        assert path in original, path

    fresh = clone(root, tmp_path / "clone", env)
    assert not (fresh / "data").exists()  # git carries no data, only dvc.lock and metrics JSON
    # Only evaluate@ann and what it needs ran, so only those have hashes in dvc.lock to pull.
    pulled = dvc(fresh, env, "pull", "--with-deps", f"evaluate@{EXP}")
    assert "added" in pulled.stdout, pulled.stdout
    restored = files(fresh)
    assert sorted(restored) == sorted(original)
    assert [p for p in original if restored[p] != original[p]] == []

    status = dvc(fresh, env, "status", "--with-deps", f"evaluate@{EXP}")
    assert status.stdout.strip() == "Data and pipelines are up to date.", status.stdout
    cloud = dvc(fresh, env, "status", "--cloud", "--with-deps", f"evaluate@{EXP}")
    assert "Cache and remote 'storage' are in sync." in cloud.stdout, cloud.stdout
    repro = dvc(fresh, env, "repro", f"evaluate@{EXP}")
    assert "Running stage" not in repro.stdout, repro.stdout  # nothing to recompute


@pytest.mark.parametrize("remote_kind", ["empty", "missing"])
def test_pull_from_an_empty_or_missing_remote_fails(pushed, tmp_path, remote_kind):
    root, env, _, _ = pushed
    fresh = clone(root, tmp_path / "clone", env)
    elsewhere = tmp_path / "remote"
    if remote_kind == "empty":
        elsewhere.mkdir()
    # --local: .dvc/config.local overrides the committed remote URL, in this clone only.
    dvc(fresh, env, "remote", "modify", "--local", "storage", "url", str(elsewhere))
    result = dvc(fresh, env, "pull", "--with-deps", f"evaluate@{EXP}", check=False)
    assert result.returncode != 0
    assert "failed to pull data from the cloud" in result.stderr, result.stderr
    assert "Some of the cache files do not exist neither locally nor on remote" in result.stderr
    assert not (fresh / f"data/models/{EXP}/final.pt").exists()
    shutil.rmtree(fresh)

