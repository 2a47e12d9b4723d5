"""Every command block the README tells a user to run is run by the suite as written (see
tests/readme_commands.py for what a test may fill in), so a renamed key or flag fails a test
instead of a user. This module keeps the list: a new block fails here until a test runs it."""

import re
from pathlib import Path

from readme_commands import ROOT, bash_blocks, block, prepared

# The first command of each block -> the test that runs the block.
RUN_BY = {
    "python3 -m venv .venv && .venv/bin/pip install -r requirements.lock -e .":
        "test_the_setup_command_is_cis_install_then_dvc_repro (its `dvc repro` at tiny sizes: "
        "the quick profile in tests/test_full_pipeline_e2e.py)",
    "python3 -m venv .venv && .venv/bin/pip install -q -r requirements.lock -e . && ":
        "test_ci_runs_the_readmes_test_command_word_for_word (and CI runs it)",
    "dvc exp run -S data.cifar10.url=/data/cifar10-jpeg.tar.gz":
        "tests/test_pipeline_e2e.py::test_the_readmes_offline_cifar_command_runs_as_written",
    "mkdir -p local/coco-mini":
        "tests/test_full_pipeline_e2e.py (its fixture unpacks the mini set with the first line) "
        "and ::test_the_readmes_coco_command_runs_as_written",
    "dvc exp run -n quick":
        "tests/test_full_pipeline_e2e.py (its fixture is the quick profile)",
    "dvc repro evaluate@cnn":
        "tests/test_pipeline_e2e.py::test_the_readmes_everyday_commands_run_as_written",
    "for seed in 1 2 3":
        "tests/test_queue_e2e.py (its fixture queues and starts; the summary in "
        "test_seeds_command_prints_mean_and_std_over_the_sweep)",
    "dvc remote add -d storage":
        "tests/test_full_pipeline_e2e.py::test_the_readmes_remote_commands_run_as_written "
        "(after a full run; tests/test_dvc_remote.py runs its first two lines too)",
    "torchrun --standalone --nproc_per_node 4 stages/train.py deepcnn":
        "tests/test_ddp.py::test_the_readmes_torchrun_commands_run_as_written",
}


def test_every_command_block_is_run_by_a_test():
    blocks = bash_blocks()
    assert blocks, "no ```bash block found in README.md"
    for commands in blocks:
        owners = [key for key in RUN_BY if commands[0].startswith(key)]
        assert len(owners) == 1, (f"README block starting {commands[0][:60]!r} is run by "
                                  f"{len(owners)} tests here: list the test that runs it in RUN_BY")
    for key, owner in RUN_BY.items():
        assert any(c[0].startswith(key) for c in blocks), f"RUN_BY names a block gone: {key!r}"
        for path, name in re.findall(r"(tests/\w+\.py)::(\w+)", owner):
            assert f"def {name}(" in (ROOT / path).read_text(encoding="utf-8"), f"{path}::{name}"
        for name in re.findall(r"^(test_\w+)", owner):
            assert f"def {name}(" in Path(__file__).read_text(encoding="utf-8"), name


def ci_test_command() -> str:
    lines = (ROOT / ".ci/run").read_text(encoding="utf-8").splitlines()
    (line,) = [line for line in lines if line.startswith("python3 -m venv")]
    return line


def test_ci_runs_the_readmes_test_command_word_for_word():
    (command,) = block("python3 -m venv .venv && .venv/bin/pip install -q")
    assert command == ci_test_command()
    assert command.endswith(".venv/bin/pytest -n auto --dist loadfile")


def test_the_setup_command_is_cis_install_then_dvc_repro():
    """The pipeline command installs exactly what CI installs, then runs the whole pipeline."""
    (command,) = block("python3 -m venv .venv && .venv/bin/pip install -r")
    install = ci_test_command().split(" && .venv/bin/pytest")[0].replace(" -q", "")
    assert command == f"{install} && . .venv/bin/activate && dvc repro"


def test_blocks_are_parsed_as_a_shell_reads_them():
    text = "x\n```bash\ndvc exp run -S a=1 \\\n    -S b=2 t@x   # why\n# only a comment\n\n```\n"
    assert bash_blocks(text) == [["dvc exp run -S a=1 -S b=2 t@x"]]


def test_a_test_adds_sizes_before_the_targets_and_keeps_the_readmes_own_values():
    line = prepared("dvc exp run -n quick -S a=/data/x -S b=<its md5> t@1 t@2",
                    {"/data/": "/tmp/d/", "<its md5>": "abc"}, ["c=1"])
    assert line == "dvc exp run -n quick -S a=/tmp/d/x -S b=abc -S c=1 t@1 t@2"
    assert re.search(r"-S c=1$", prepared("dvc exp run -n q -S a=1", {}, ["c=1"]))
