"""The layout shows the pipeline, and dvc.yaml knows exactly what each stage runs.

- Each stage's `deps` hold exactly the source files its script imports (tests/import_closure.py):
  a file missing means stale outputs after an edit, a file too many means needless reruns.
- Imports run one way: shared modules < models < data < evaluate < train < report, no cycle.
- The report stage reads every experiment of params.yaml, and nothing in the project points
  outside the repository.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from import_closure import ROOT, closure, import_graph

DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
# A phase may import from its own rank and below; shared modules (top-level files) rank 0.
RANKS = {"models": 1, "data": 2, "evaluate": 3, "train": 4, "report": 5}


def stage_definition(name: str) -> dict:
    stage = DVC["stages"][name]
    return stage.get("do", stage)


def source_deps(stage: dict) -> set[Path]:
    return {Path(d) for d in stage.get("deps", []) if d.startswith(("src/", "stages/"))}


def stage_script(stage: dict) -> Path:
    match = re.search(r"stages/\w+\.py", stage["cmd"])
    assert match, f"cmd {stage['cmd']!r} runs no stages/*.py script"
    return Path(match.group(0))


@pytest.mark.parametrize("name", sorted(DVC["stages"]))
def test_stage_deps_are_its_scripts_import_closure(name):
    stage = stage_definition(name)
    script = stage_script(stage)
    expected = {script} | closure(ROOT / script)
    listed = source_deps(stage)
    missing = sorted(str(p) for p in expected - listed)
    extra = sorted(str(p) for p in listed - expected)
    assert not missing, f"dvc.yaml stage {name} misses {missing[0]} (its script imports it)"
    assert not extra, f"dvc.yaml stage {name} lists {extra[0]}, which its script never imports"


def rank(module: str) -> int:
    parts = module.split(".")
    return RANKS.get(parts[1], 0) if len(parts) > 1 else 0


def is_ancestor(package: str, module: str) -> bool:
    return module.startswith(package + ".")


def test_imports_run_one_way_from_the_phases_down_to_the_shared_modules():
    graph = import_graph()
    upward = [(m, dep) for m, deps in graph.items() for dep in deps
              if m != "cnnlab" and dep != "cnnlab" and rank(dep) > rank(m)]
    assert not upward, f"{upward[0][0]} imports {upward[0][1]}, a later phase"


def test_no_import_cycle():
    graph = import_graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        # A module's own packages run before it (models/__init__ importing its model modules,
        # which import models.registry, is the registry pattern, not a cycle).
        for dep in sorted(d for d in graph.get(module, ()) if not is_ancestor(d, module)):
            if state.get(dep) == 1:
                cycle = path[path.index(dep):] + [dep] if dep in path else [module, dep]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep, path + [dep])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_phase_packages_import_nothing_when_imported():
    # An __init__ that imports its modules would put all of them in every stage's closure.
    for package in ["cnnlab", *(f"cnnlab.{p}" for p in RANKS if p != "models")]:
        assert not import_graph()[package], f"{package}/__init__.py imports modules"


def test_the_report_stage_reads_every_experiment_and_only_those():
    deps = set(stage_definition("report")["deps"])
    named = {m.group(1) for d in deps if (m := re.fullmatch(r"metrics/(\w+)\.json", d))}
    every = {**PARAMS["experiments"], **PARAMS.get("chained", {})}
    assert named == set(every), (
        f"report deps name {sorted(named ^ set(every))[0]} "
        f"differently from params.yaml's experiments and chained experiments")
    for exp in every:
        assert f"metrics/{exp}/train/metrics.json" in deps, f"report misses {exp}'s train summary"


@pytest.mark.parametrize("pattern", [r"\.\./shared", r"EXPERIMENTS\.md", r"DESIGN\.md",
                                     r"shared/seeds"])
def test_code_and_pipeline_cite_nothing_outside_the_repository(pattern):
    files = [ROOT / "dvc.yaml", ROOT / "params.yaml", *sorted((ROOT / "src").rglob("*.py")),
             *sorted((ROOT / "stages").glob("*.py"))]
    hits = [f"{f.relative_to(ROOT)}:{n}" for f in files
            for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1)
            if re.search(pattern, line)]
    assert not hits, f"{hits[0]} points outside the repository ({pattern})"
