"""The source files a script runs: its imports within cnnlab, followed transitively.

Read from the source with `ast`, so it sees every import a stage can execute, also those inside
functions (run only when that function is), without importing anything. Importing
`cnnlab.a.b` runs `cnnlab/__init__.py` and `cnnlab/a/__init__.py` too, so they count.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"


def module_file(module: str) -> Path | None:
    """The file of a cnnlab module or package, or None if there is none."""
    base = SRC.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path) -> set[str]:
    """The cnnlab modules one file imports, each with the packages above it."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from cnnlab.x import y`: y is a submodule or a name defined in cnnlab.x.
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            if name == "cnnlab" or name.startswith("cnnlab."):
                parts = name.split(".")
                found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return {m for m in found if module_file(m) is not None}


def closure(script: Path) -> set[Path]:
    """Every cnnlab source file `script` runs, as paths relative to the project root."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        path = todo.pop()
        for module in imported_modules(path):
            file = module_file(module)
            if file not in seen:
                seen.add(file)
                todo.append(file)
    return {p.relative_to(ROOT) for p in seen}


def import_graph() -> dict[str, set[str]]:
    """Each cnnlab module -> the cnnlab modules it imports (packages included)."""
    graph = {}
    for path in sorted((SRC / "cnnlab").rglob("*.py")):
        rel = path.relative_to(SRC).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        graph[name] = imported_modules(path) - {name}
    return graph


def sync_dvc_yaml(path: Path = ROOT / "dvc.yaml") -> list[str]:
    """Rewrite each stage's source deps in dvc.yaml to its script's closure (data deps, comments
    and everything else kept as written). Returns the names of the stages it changed."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    out, changed, stage, i = [], [], None, 0
    while i < len(lines):
        line = lines[i]
        if (m := re.match(r"  (\w+):\s*$", line)):
            stage = m.group(1)
        if stage and (cmd := re.search(r"cmd: python (stages/\w+\.py)", line)):
            script = cmd.group(1)
        out.append(line)
        i += 1
        if stage and re.match(r"\s+deps:\s*$", line):
            indent = re.match(r"\s*", lines[i]).group(0)
            items = []
            while i < len(lines) and lines[i].startswith(indent + "- "):
                items.append(lines[i])
                i += 1
            kept = [x for x in items if not x[len(indent) + 2:].startswith(("src/", "stages/"))]
            code = [script] + sorted(str(p) for p in closure(ROOT / script))
            new = [f"{indent}- {p}\n" for p in code] + kept
            changed += [stage] if new != items else []
            out.extend(new)
    path.write_text("".join(out), encoding="utf-8")
    return changed


if __name__ == "__main__":
    # python tests/import_closure.py: bring dvc.yaml's source deps in line with the imports.
    print("updated:", ", ".join(sync_dvc_yaml()) or "nothing")
