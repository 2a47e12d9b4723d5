"""The code keeps the shape that lets a reader follow it: no function in src/ or stages/ over 60
lines (the loop reads as the recipe), and a training run's resumable state lives in one object."""

import ast
import dataclasses
from pathlib import Path

import torch
from test_resume import every_stream
from test_training import separable_dataset

from cnnlab.train.loop import train
from cnnlab.train.resume import ResumeFile, TrainState, fingerprint

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 60


def long_functions(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_LINES:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines})")
    return found


def test_no_function_is_longer_than_60_lines():
    found = long_functions(ROOT / "src") + long_functions(ROOT / "stages")
    assert not found, f"functions over {MAX_LINES} lines: {', '.join(found)}"


def test_the_checker_sees_a_long_function(tmp_path):
    (tmp_path / "pkg").mkdir()
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    (tmp_path / "pkg" / "m.py").write_text(f"def f():\n{body}\n")
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        assert long_functions(tmp_path / "pkg") == ["pkg/m.py:1 f (61)"]
    finally:
        ROOT = saved


def test_the_resume_file_holds_every_field_of_the_train_state(tmp_path):
    """A saved state is TrainState.state_dict(): one key per field (each rank's own under
    "ranks"), so a field added to TrainState is saved and restored with no other change."""
    exp, data = every_stream(epochs=2), separable_dataset(n=64)
    resume = ResumeFile(tmp_path / "run.pt", fingerprint(exp, "toy", 64))
    original = ResumeFile.clear
    ResumeFile.clear = lambda self: None  # keep the file the stage would remove at the end
    try:
        train(exp, data, torch.device("cpu"), progress=False, resume=resume)
    finally:
        ResumeFile.clear = original
    saved = resume.load()
    fields = {f.name for f in dataclasses.fields(TrainState)}
    per_rank = set(TrainState.per_rank())
    assert set(saved) - {"ranks", "stamp"} == fields - per_rank
    assert set(saved["ranks"][0]) == per_rank
    assert saved["step"] == 2 and len(saved["history"]) == 1 and saved["best_epoch"] == 1
