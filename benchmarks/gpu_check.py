"""One command that proves cnnlab's GPU path on a lent GPU machine (benchmarks/README.md, "GPU
check"). From the project root, with the carry folder that benchmarks/build_gpu_carry.py builds:

    python3 benchmarks/gpu_check.py OUT_DIR [--carry .gpu-carry] [--minutes 8]

It installs what the machine lacks from the carried wheels, prepares CIFAR-10 from the carried
archive through `dvc repro` in a throwaway copy of the pipeline (the working tree's outputs are
never touched), then runs, each phase time-boxed, its failure recorded and the next one started:
1. the CUDA tests (pytest -m cuda tests/test_cuda.py);
2. the speed harness (benchmarks/train_speed.py) for deepcnn and cnn_aug: cnnlab against the
   study-style loop with 16 DataLoader workers, TFLOP/s against the measured bf16 matmul rate;
3. the study-000 trio (ann, cnn, cnn_aug) at its full recipe through `dvc repro`;
4. deepcnn at its full recipe for as many epochs as the time left allows, with per-epoch test
   accuracy.
It writes OUT_DIR/gpu_check.json, gpu_check.md (targets met or not, each phase) and
gpu_check.log (each phase's output), rewritten after every phase, so a run cut short still
leaves what it measured. It exits 1 if a phase failed or timed out.

`--smoke` runs the same phases on the CPU at tiny sizes, with the GPU hidden, so the CUDA tests
skip; tests/test_gpu_check.py runs it, so the command cannot rot between the rare GPU runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRIO = ("ann", "cnn", "cnn_aug")
SPEED_EXPERIMENTS = ("deepcnn", "cnn_aug")
ARCHIVE_NAME = "cifar10-jpeg.tar.gz"
REQUIRED_MODULES = ("dvc", "dvclive", "pycocotools")  # what the image lacks (KINDS.md)
PHASES = ("install", "prepare", "cuda_tests", "speed", "trio", "deepcnn")
LOG_TAIL_BYTES = 2 * 2**20  # of each phase's output in gpu_check.log


@dataclasses.dataclass(frozen=True)
class Settings:
    """What differs between the GPU run and the CPU smoke run: sizes and time boxes, never code."""

    smoke: bool
    minutes: float
    budgets: dict[str, float]  # phase -> most seconds it may take (deepcnn: what is left)
    speed_args: tuple[str, ...]
    profile: dict[str, int] | None  # params.yaml profile caps for the trio; None: full recipe
    deepcnn_images: tuple[int, int] | None  # (train, test) subset caps; None: all of CIFAR-10
    deepcnn_margin: float  # seconds of the deepcnn phase kept for start-up and the last scoring


GPU = Settings(smoke=False, minutes=8.0,
               budgets={"install": 60, "prepare": 90, "cuda_tests": 170, "speed": 130,
                        "trio": 110, "deepcnn": 480},
               speed_args=("--device", "cuda", "--workers", "16", "--train-images", "25000",
                           "--eval-images", "10000", "--epochs", "2"),
               profile=None, deepcnn_images=None, deepcnn_margin=25)
SMOKE = Settings(smoke=True, minutes=4.0,
                 budgets={"install": 60, "prepare": 60, "cuda_tests": 90, "speed": 120,
                          "trio": 120, "deepcnn": 20},
                 speed_args=("--device", "cpu", "--workers", "0", "--train-images", "32",
                             "--eval-images", "20", "--epochs", "1"),
                 profile={"max_epochs": 1, "max_train_images": 32, "max_eval_images": 20},
                 deepcnn_images=(32, 20), deepcnn_margin=14)


class PhaseTimeout(Exception):
    """A phase's command ran past its time box and was killed with its process group."""


@dataclasses.dataclass
class Context:
    """Where a run reads and writes, and the environment its child processes get."""

    settings: Settings
    out: Path
    work: Path  # logs, the site folder of installed wheels, the throwaway project
    carry: Path
    archive: Path
    import_check: tuple[str, ...]
    env: dict[str, str]
    started: float  # time.monotonic() when the run began
    deadline: float  # time.monotonic() by which every phase must have ended
    report: dict = dataclasses.field(default_factory=dict)

    @property
    def project(self) -> Path:
        return self.work / "project"


# ------------------------------------------------------------------------------ running phases


def run_logged(ctx: Context, name: str, cmd: list[str], cwd: Path, timeout: float
               ) -> tuple[int, str]:
    """Run `cmd` with its output in work/logs/<name>.log; (exit code, output). Past `timeout`
    its whole process group (DataLoader workers, dvc's stage processes) is killed."""
    log = ctx.work / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as sink:
        sink.write(f"$ {' '.join(cmd)}\n".encode())
        sink.flush()
        proc = subprocess.Popen(cmd, cwd=cwd, env=ctx.env, stdout=sink, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            code = proc.wait(timeout=max(timeout, 1))
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise PhaseTimeout(f"{cmd[1] if len(cmd) > 1 else cmd[0]} ran past its "
                               f"{timeout:.0f} s and was killed") from None
    return code, log.read_text(encoding="utf-8", errors="replace")


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the process group this run started (a training stage saves nothing on it and
    exits), then SIGKILL to what is left of it."""
    for sig, grace in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def run_phase(ctx: Context, name: str, fn: Callable[[Context, float], dict]) -> dict:
    """Run one phase inside its time box; whatever happens, record it and carry on."""
    left = ctx.deadline - time.monotonic()
    timeout = min(ctx.settings.budgets[name], left)
    record: dict = {"status": "skipped", "seconds": 0.0}
    if timeout < 5:
        record["error"] = "no time left in the run's time box"
        return record
    start = time.monotonic()
    try:
        record.update({"status": "passed", **fn(ctx, timeout)})
    except PhaseTimeout as exc:
        record.update(status="timed out", error=str(exc))
    except Exception as exc:  # noqa: BLE001  (a phase's failure is data, not the end of the run)
        record.update(status="failed", error=one_line(exc))
    record["seconds"] = round(time.monotonic() - start, 1)
    return record


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}".strip()


class PhaseFailed(Exception):
    """A phase's command ran but did not do its job; the message says what went wrong."""


def check_exit(code: int, output: str, what: str) -> None:
    """A failed command as one line: the stage's own `error: ...` line where one was printed
    (under dvc it comes before dvc's generic "failed to reproduce"), else the last line."""
    if code != 0:
        lines = [line for line in output.strip().splitlines() if line.strip()] or ["(no output)"]
        errors = [line for line in lines if line.startswith("error: ")]
        raise PhaseFailed(f"{what} exited {code}: {(errors or lines)[-1][:300]}")


# ------------------------------------------------------------------------------------- phases


def phase_install(ctx: Context, timeout: float) -> dict:
    """pip-install the carried wheels into work/site (no index, no dependency resolution: the
    folder holds exactly the closure the image lacks), then check that the modules import and
    that every installed distribution's requirements are met."""
    wheels = sorted((ctx.carry / "wheels").glob("*.whl"))
    details: dict = {"wheels": len(wheels)}
    if wheels:
        site = ctx.work / "site"
        code, output = run_logged(ctx, "install", [
            sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
            "--no-compile", "--no-cache-dir", "--disable-pip-version-check", "--upgrade",
            "--target", str(site), *map(str, wheels)], ROOT, timeout)
        check_exit(code, output, "pip install")
        ctx.env["PYTHONPATH"] = os.pathsep.join([str(site), ctx.env["PYTHONPATH"]])
        details["site"] = str(site)
    else:
        details["note"] = f"no wheels in {ctx.carry / 'wheels'}: using what is installed"
    code, output = run_logged(ctx, "install", [
        sys.executable, str(Path(__file__)), "--child", "probe",
        *(["--site", details["site"]] if wheels else []),
        "--modules", ",".join(ctx.import_check)], ROOT, 120)
    check_exit(code, output, "import check")
    probe = json.loads(output.strip().splitlines()[-1])
    details.update(imports=probe["imports"], unmet=probe["unmet"])
    ctx.report["machine"] = probe["machine"]
    broken = [m for m, status in probe["imports"].items() if status != "ok"]
    if broken:
        raise PhaseFailed(f"cannot import {broken[0]}: {probe['imports'][broken[0]]}")
    return details


def phase_prepare(ctx: Context, timeout: float) -> dict:
    """A throwaway copy of the pipeline whose CIFAR-10 source is the carried archive, prepared
    by `dvc repro prepare_cifar10` (or by the same stage scripts where dvc is missing)."""
    if not ctx.archive.is_file():
        raise PhaseFailed(f"CIFAR-10 archive not found: {ctx.archive}")
    md5 = file_md5(ctx.archive)
    make_project(ctx.project, ctx.archive, md5, ctx.settings.profile)
    via = "dvc repro" if dvc_works(ctx) else "stage scripts (dvc does not import)"
    if via == "dvc repro":
        for cmd in (["init", "--no-scm", "-q"], ["repro", "prepare_cifar10"]):
            code, output = run_logged(ctx, "prepare", [sys.executable, "-m", "dvc", *cmd],
                                      ctx.project, timeout)
            check_exit(code, output, f"dvc {cmd[0]}")
        quiet_dvc(ctx.project)
    else:
        for script in ("download_cifar10", "prepare_cifar10"):
            code, output = run_logged(ctx, "prepare", [sys.executable, f"stages/{script}.py"],
                                      ctx.project, timeout)
            check_exit(code, output, script)
    meta = json.loads((ctx.project / "data/prepared/cifar10/meta.json").read_text())
    return {"via": via, "archive": str(ctx.archive), "md5": md5, "splits": meta["splits"]}


def phase_cuda_tests(ctx: Context, timeout: float) -> dict:
    """The `cuda`-marked tests, from the repository itself (they build their own data)."""
    junit = ctx.work / "junit.xml"
    code, output = run_logged(ctx, "cuda_tests", [
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "cuda",
        "--junitxml", str(junit), "tests/test_cuda.py"], ROOT, timeout)
    if not junit.is_file():
        check_exit(code or 1, output, "pytest")
    details = junit_summary(junit)
    if details["failed"] or code not in (0, 5):
        first = details["failures"][0] if details["failures"] else output.splitlines()[-1]
        raise PhaseFailed(f"{details['failed']} of {details['tests']} CUDA tests failed; "
                          f"first: {first}")
    if details["passed"] == 0:
        details["status"] = "skipped"
        details["note"] = details.pop("skip_reason", "every CUDA test skipped")
    return details


def junit_summary(path: Path) -> dict:
    """Counts, and the first line of each failure, from pytest's JUnit XML."""
    cases = ET.parse(path).getroot().iter("testcase")
    summary: dict = {"tests": 0, "passed": 0, "failed": 0, "skipped": 0, "failures": []}
    for case in cases:
        summary["tests"] += 1
        name = case.get("name", "?")
        bad = case.find("failure") if case.find("failure") is not None else case.find("error")
        skip = case.find("skipped")
        if bad is not None:
            summary["failed"] += 1
            message = (bad.get("message") or "").strip().splitlines() or ["(no message)"]
            summary["failures"].append(f"{name}: {message[0][:300]}")
        elif skip is not None:
            summary["skipped"] += 1
            summary.setdefault("skip_reason", (skip.get("message") or "").strip()[:200])
        else:
            summary["passed"] += 1
    return summary


def phase_speed(ctx: Context, timeout: float) -> dict:
    """benchmarks/train_speed.py on the prepared project: per experiment, each loop in a fresh
    process; its JSON is kept whole and its Markdown tables copied into the summary."""
    figures = ctx.work / "speed.json"
    code, output = run_logged(ctx, "speed", [
        sys.executable, str(ROOT / "benchmarks/train_speed.py"), *SPEED_EXPERIMENTS,
        *ctx.settings.speed_args, "--json", str(figures)], ctx.project, timeout)
    check_exit(code, output, "train_speed.py")
    data = json.loads(figures.read_text())
    results = {}
    for name in SPEED_EXPERIMENTS:
        got = data["results"][name]
        ours, study = got["cnnlab"], got["study"]
        results[name] = {
            "speed": ours["speed"], "device": ours["device"],
            "train_images_per_second": ours["train_images_per_second"],
            "study_train_images_per_second": study["train_images_per_second"],
            "ratio_to_study": ours["train_images_per_second"] / study["train_images_per_second"],
            "train_tflops": ours["train_tflops"],
            "share_of_matmul_rate": ours["share_of_matmul_rate"],
            "study_share_of_matmul_rate": study["share_of_matmul_rate"],
            "gflop_per_image": got["flops_per_image"] / 1e9,
            "eval_accuracy": ours["eval_accuracy"], "study_eval_accuracy": study["eval_accuracy"],
            "peak_gpu_mb": ours.get("peak_gpu_mb")}
    tables = output[output.find("### "):].strip() if "### " in output else ""
    return {"matmul": data["machine"]["matmul"], "settings": data["settings"],
            "results": results, "tables": tables}


def phase_trio(ctx: Context, timeout: float) -> dict:
    """ann, cnn and cnn_aug trained and evaluated by the pipeline itself."""
    targets = [f"{stage}@{exp}" for exp in TRIO for stage in ("train", "evaluate")]
    if (ctx.project / ".dvc").is_dir():
        code, output = run_logged(ctx, "trio", [sys.executable, "-m", "dvc", "repro", *targets],
                                  ctx.project, timeout)
        check_exit(code, output, "dvc repro")
        via = "dvc repro"
    else:
        end = time.monotonic() + timeout
        for target in targets:
            stage, exp = target.split("@")
            code, output = run_logged(ctx, "trio", [sys.executable, f"stages/{stage}.py", exp],
                                      ctx.project, end - time.monotonic())
            check_exit(code, output, target)
        via = "stage scripts (no dvc repository: the prepare phase did not make one)"
    results = {}
    for exp in TRIO:
        scored = json.loads((ctx.project / f"metrics/{exp}.json").read_text())
        trained = json.loads((ctx.project / f"metrics/{exp}/train/metrics.json").read_text())
        results[exp] = {"test_accuracy": scored["accuracy"], "epochs": trained["epochs"],
                        "train_seconds": trained["train_seconds"],
                        "images_per_second": trained["images_per_second"],
                        "device": trained["device"], "speed": trained["speed"]}
    return {"via": via, "results": results}


def phase_deepcnn(ctx: Context, timeout: float) -> dict:
    """deepcnn's full recipe (150 epochs of OneCycle) in a child that stops at an epoch's end
    once the next epoch would not fit in the time left."""
    out = ctx.work / "deepcnn.json"
    budget = max(timeout - ctx.settings.deepcnn_margin, 1)
    cmd = [sys.executable, str(Path(__file__)), "--child", "deepcnn", "--budget", str(budget),
           "--json", str(out)]
    if ctx.settings.deepcnn_images:
        cmd += ["--images", *map(str, ctx.settings.deepcnn_images)]
    code, output = run_logged(ctx, "deepcnn", cmd, ctx.project, timeout)
    check_exit(code, output, "deepcnn run")
    return json.loads(out.read_text())


PHASE_FUNCTIONS: dict[str, Callable[[Context, float], dict]] = {
    "install": phase_install, "prepare": phase_prepare, "cuda_tests": phase_cuda_tests,
    "speed": phase_speed, "trio": phase_trio, "deepcnn": phase_deepcnn}


# ---------------------------------------------------------------------------- the project copy


def make_project(root: Path, archive: Path, md5: str, profile: dict[str, int] | None) -> None:
    """The pipeline (dvc.yaml, params.yaml, stages, src) in `root`, reading CIFAR-10 from the
    local `archive`; the repository's own data/ and metrics/ are never read or written."""
    import yaml

    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / name, root / name)
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for folder in ("stages", "src"):
        shutil.copytree(ROOT / folder, root / folder, ignore=skip)
    params = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))
    params["data"]["cifar10"] = {"url": str(archive.resolve()), "md5": md5}
    if profile:
        params["profile"] = {**params.get("profile", {}), **profile}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")


def quiet_dvc(project: Path) -> None:
    """No analytics and no update check: the GPU machine reaches no network."""
    config = project / ".dvc" / "config"
    text = config.read_text(encoding="utf-8") if config.is_file() else ""
    if "analytics" not in text:
        config.write_text(text + ("" if "[core]" in text else "[core]\n")
                          + "    analytics = false\n    check_update = false\n", encoding="utf-8")


def dvc_works(ctx: Context) -> bool:
    probe = subprocess.run([sys.executable, "-c", "import dvc.repo"], env=ctx.env,
                           capture_output=True, timeout=120)
    return probe.returncode == 0


def file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(2**20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ------------------------------------------------------------------------------------ children


def child_probe(site: str | None, modules: list[str]) -> None:
    """Print one JSON line: which modules import, which requirements of the distributions in
    `site` are unmet, and what the machine is."""
    import importlib
    import importlib.metadata as md

    imports = {}
    for module in modules:
        try:
            importlib.import_module(module)
            imports[module] = "ok"
        except Exception as exc:  # noqa: BLE001  (reported, not raised)
            imports[module] = one_line(exc)
    unmet = unmet_requirements(md.distributions(path=[site])) if site else []
    print(json.dumps({"imports": imports, "unmet": unmet, "machine": machine()}))


def unmet_requirements(dists) -> list[str]:
    """Each requirement of `dists` (extras aside) that no installed distribution satisfies."""
    import importlib.metadata as md

    from packaging.requirements import Requirement

    unmet = []
    for dist in dists:
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            try:
                version = md.version(req.name)
            except md.PackageNotFoundError:
                unmet.append(f"{dist.metadata['Name']} needs {req}: not installed")
                continue
            if not req.specifier.contains(version, prereleases=True):
                unmet.append(f"{dist.metadata['Name']} needs {req}: {version} is installed")
    return unmet


def machine() -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__,
            "cpus": os.cpu_count(), "cuda": torch.version.cuda,
            "gpus": torch.cuda.device_count() if torch.cuda.is_available() else 0}
    if info["gpus"]:
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, sms=props.multi_processor_count,
                    gpu_memory_gib=round(props.total_memory / 2**30, 1))
    return info


class OutOfBudget(Exception):
    """The next epoch would not end within the time budget."""


class BudgetLogger:
    """Records each epoch's scores and wall time (training plus its test scoring) and stops the
    run at an epoch's end once another epoch as long as the last would overrun the budget."""

    def __init__(self, budget: float):
        self.budget, self.start = budget, time.monotonic()
        self.rows: list[dict] = []

    def log_step(self, step: int, loss: float, lr: float) -> None:
        pass

    def log_grad_norms(self, step: int, norms: dict[str, float]) -> None:
        pass

    def log_epoch(self, epoch: int, step: int, metrics: dict[str, float]) -> None:
        now = time.monotonic() - self.start
        last = now - (self.rows[-1]["elapsed_seconds"] if self.rows else 0.0)
        self.rows.append({"epoch": epoch, **metrics, "epoch_wall_seconds": round(last, 3),
                          "elapsed_seconds": round(now, 3)})
        if now + last > self.budget:
            raise OutOfBudget


def child_deepcnn(budget: float, images: list[int] | None, out: Path) -> None:
    """Train deepcnn's params.yaml recipe in this project until done or out of budget: the
    recipe as written, not capped by params.yaml's profile (the smoke run caps the trio)."""
    from cnnlab import paths
    from cnnlab.config import load_params
    from cnnlab.data.prepared import load_prepared
    from cnnlab.devices import describe_device, hold_device
    from cnnlab.train.loop import train

    exp = load_params().experiments["deepcnn"]
    if images:
        exp = dataclasses.replace(exp, train_subset=images[0], eval_subset=images[1])
    device = hold_device(exp.device)
    dataset = load_prepared(paths.prepared_dir(exp.dataset))
    logger = BudgetLogger(budget)
    try:
        result = train(exp, dataset, device, logger, progress=False, name="deepcnn")
        finished = {"train_seconds": result.train_seconds, "speed": result.speed,
                    "images_per_second": result.images_per_second,
                    "best_epoch": result.best_epoch,
                    "epoch_seconds": [row["epoch_seconds"] for row in result.history]}
    except OutOfBudget:
        finished = None
    out.write_text(json.dumps(deepcnn_summary(exp.epochs, logger.rows, finished,
                                              describe_device(device)), indent=2))


def deepcnn_summary(planned: int, rows: list[dict], finished: dict | None, device: str) -> dict:
    """The per-epoch table and what it says: the 150-epoch time (measured when the run ended,
    else projected from the epochs after the first, which pays for warm-up), best accuracy."""
    steady = [r["epoch_wall_seconds"] for r in rows[1:]] or [r["epoch_wall_seconds"]
                                                            for r in rows]
    mean_epoch = sum(steady) / len(steady) if steady else None
    accuracy = [r["test_accuracy"] for r in rows if "test_accuracy" in r]
    summary = {"device": device, "epochs_planned": planned, "epochs_done": len(rows),
               "completed": finished is not None, "rows": rows,
               "mean_epoch_wall_seconds": mean_epoch,
               "best_test_accuracy": max(accuracy) if accuracy else None,
               "last_test_accuracy": accuracy[-1] if accuracy else None}
    if finished is not None:
        summary.update(finished, recipe_seconds=finished["train_seconds"],
                       recipe_seconds_how="measured (training only, scoring excluded)")
    elif mean_epoch is not None:
        summary.update(recipe_seconds=mean_epoch * planned,
                       recipe_seconds_how=f"projected from {len(steady)} epochs (each with its "
                                          f"test scoring)")
    return summary


# ----------------------------------------------------------------------------- targets, report


def targets(phases: dict, smoke: bool) -> list[dict]:
    """The issue's targets for deepcnn on the GPU, each met, missed or not measured (None). A
    smoke run's figures come from a few images on a CPU: shown, never judged."""
    speed = phases.get("speed", {}).get("results", {}).get("deepcnn")
    deep = phases.get("deepcnn", {})
    nothing = "the speed phase gave no figures"
    ips = speed["train_images_per_second"] if speed else None
    ratio = speed["ratio_to_study"] if speed else None
    share = speed["share_of_matmul_rate"] if speed else None
    seconds = deep.get("recipe_seconds")
    done = bool(deep.get("completed")) and deep.get("epochs_done") == 150
    rows = [
        _target("deepcnn train img/s, per-sample AutoAugment", ">= 40,000",
                None if ips is None else round(ips), None if ips is None else ips >= 40000,
                "" if speed else nothing),
        _target("deepcnn: cnnlab / study-style loop, train img/s", ">= 5x",
                None if ratio is None else round(ratio, 2),
                None if ratio is None else ratio >= 5, "" if speed else nothing),
        _target("deepcnn: training FLOP/s / measured bf16 matmul rate", ">= 30%",
                None if share is None else f"{share:.1%}",
                None if share is None else share >= 0.30, "" if speed else nothing),
        _target("deepcnn: 150 epochs", "<= 180 s",
                None if seconds is None else round(seconds, 1),
                None if seconds is None else seconds <= 180,
                deep.get("recipe_seconds_how", "the deepcnn phase gave no figures")),
        _target("deepcnn: mean test accuracy over 3 seeds", ">= 94.0%",
                deep.get("best_test_accuracy"), None,
                "one seed of 3: its best epoch" if done else
                f"{deep.get('epochs_done', 0)} of 150 epochs ran, one seed"),
    ]
    if smoke:
        for row in rows:
            row.update(met=None, note="CPU smoke run: tiny sizes, not a measurement")
    return rows


def _target(what: str, goal: str, value: object, met: bool | None, note: str) -> dict:
    return {"target": what, "goal": goal, "value": value, "met": met, "note": note}


def write_reports(ctx: Context) -> None:
    ctx.out.mkdir(parents=True, exist_ok=True)
    report = ctx.report
    report["targets"] = targets(report["phases"], report["smoke"])
    report["seconds"] = round(time.monotonic() - ctx.started, 1)
    (ctx.out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str) + "\n",
                                            encoding="utf-8")
    (ctx.out / "gpu_check.md").write_text(markdown(report), encoding="utf-8")
    logs = sorted((ctx.work / "logs").glob("*.log"))
    with open(ctx.out / "gpu_check.log", "w", encoding="utf-8") as sink:
        for log in logs:
            data = log.read_bytes()[-LOG_TAIL_BYTES:].decode("utf-8", "replace")
            sink.write(f"===== {log.stem} =====\n{data}\n")


def markdown(report: dict) -> str:
    phases = report["phases"]
    lines = [f"# GPU check ({'CPU smoke run' if report['smoke'] else 'GPU run'})", "",
             f"`{report['command']}`, {report['date']}: {report['seconds']} s of the "
             f"{report['time_box_seconds']:.0f} s time box.", "",
             f"Machine: {describe_machine(report.get('machine', {}))}", "",
             "## Targets", "", "| target | goal | measured | met |", "|---|---|---|---|"]
    mark = {True: "yes", False: "**no**", None: "not measured"}
    for t in report["targets"]:
        value = "—" if t["value"] is None else t["value"]
        lines.append(f"| {t['target']} | {t['goal']} | {value} | {mark[t['met']]}"
                     f"{' (' + t['note'] + ')' if t['note'] else ''} |")
    lines += ["", "## Phases", "", "| phase | status | seconds | note |", "|---|---|---|---|"]
    for name, record in phases.items():
        note = record.get("error") or record.get("note") or record.get("via", "")
        lines.append(f"| {name} | {record['status']} | {record['seconds']} | {note} |")
    for section in (_tests_section, _speed_section, _trio_section, _deepcnn_section):
        lines += section(phases)
    return "\n".join(lines) + "\n"


def describe_machine(info: dict) -> str:
    if not info:
        return "not probed (the install phase did not run)"
    gpu = (f"{info['gpus']} x {info['gpu']} ({info['sms']} SMs, {info['gpu_memory_gib']} GiB)"
           if info.get("gpus") else "no GPU")
    return (f"{gpu}, {info['cpus']} CPUs, Python {info['python']}, torch {info['torch']} "
            f"(CUDA {info['cuda']})")


def _tests_section(phases: dict) -> list[str]:
    tests = phases.get("cuda_tests")
    if not tests or "tests" not in tests:
        return []
    lines = ["", "## CUDA tests", "",
             f"{tests['passed']} passed, {tests['failed']} failed, {tests['skipped']} skipped "
             f"of {tests['tests']} (`pytest -m cuda tests/test_cuda.py`)."]
    return lines + [f"- {failure}" for failure in tests["failures"]]


def _speed_section(phases: dict) -> list[str]:
    speed = phases.get("speed", {})
    if "results" not in speed:
        return []
    matmul = speed["matmul"]
    return ["", "## Speed harness", "",
            f"`benchmarks/train_speed.py {' '.join(SPEED_EXPERIMENTS)}` with "
            f"{json.dumps(speed['settings'])}; reference rate: {matmul['what']} at "
            f"{matmul['flops_per_second'] / 1e12:.1f} TFLOP/s.", "", speed["tables"]]


def _trio_section(phases: dict) -> list[str]:
    trio = phases.get("trio", {})
    if "results" not in trio:
        return []
    lines = ["", f"## Study-000 trio ({trio['via']})", "",
             "| experiment | test accuracy | epochs | train seconds | train img/s | device | "
             "speed |", "|---|---|---|---|---|---|---|"]
    for exp, r in trio["results"].items():
        lines.append(f"| {exp} | {r['test_accuracy']:.2%} | {r['epochs']} | "
                     f"{r['train_seconds']:.1f} | {r['images_per_second']:,.0f} | {r['device']} "
                     f"| {r['speed']} |")
    return lines


def _deepcnn_section(phases: dict) -> list[str]:
    deep = phases.get("deepcnn", {})
    if "rows" not in deep:
        return []
    lines = ["", f"## deepcnn, full recipe, on {deep['device']}", "",
             f"{deep['epochs_done']} of {deep['epochs_planned']} epochs"
             f"{' (completed)' if deep['completed'] else ' (stopped at the time box)'}; "
             f"150 epochs: {deep.get('recipe_seconds', 0):.1f} s, "
             f"{deep.get('recipe_seconds_how', '')}.", "",
             "| epoch | test accuracy | train loss | train accuracy | epoch wall s |",
             "|---|---|---|---|---|"]
    for r in deep["rows"]:
        lines.append(f"| {r['epoch']} | {r.get('test_accuracy', float('nan')):.2%} | "
                     f"{r.get('train_loss', float('nan')):.4f} | "
                     f"{r.get('train_accuracy', float('nan')):.2%} | {r['epoch_wall_seconds']} |")
    return lines


# ---------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", type=Path, help="where the JSON, Markdown and log go")
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny sizes, GPU tests skip")
    parser.add_argument("--carry", type=Path, default=ROOT / ".gpu-carry",
                        help="folder of wheels/ and the CIFAR-10 archive (build_gpu_carry.py)")
    parser.add_argument("--archive", type=Path, help=f"CIFAR-10 archive (default: CARRY/"
                                                      f"{ARCHIVE_NAME})")
    parser.add_argument("--minutes", type=float, help="the run's time box (GPU 8, smoke 4)")
    parser.add_argument("--phases", default=",".join(PHASES),
                        help=f"comma-separated subset of {','.join(PHASES)}")
    parser.add_argument("--import-check", default=",".join(REQUIRED_MODULES),
                        help="modules that must import after the install")
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one, "
                                                  "removed at the end)")
    parser.add_argument("--child", choices=("probe", "deepcnn"), help=argparse.SUPPRESS)
    parser.add_argument("--site", help=argparse.SUPPRESS)
    parser.add_argument("--budget", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--images", type=int, nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--modules", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is None and args.out is None:
        parser.error("OUT_DIR is required")
    unknown = set(args.phases.split(",")) - set(PHASES)
    if unknown:
        parser.error(f"unknown phase {sorted(unknown)[0]!r} (choose from {', '.join(PHASES)})")
    return args


def build_context(args: argparse.Namespace, settings: Settings) -> Context:
    work = args.work or Path(tempfile.mkdtemp(prefix="gpu_check-"))
    (work / "bin").mkdir(parents=True, exist_ok=True)
    # dvc.yaml's commands say `python`: make that this interpreter, whatever PATH holds.
    wrapper = work / "bin" / "python"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "DVC_NO_ANALYTICS": "1",
           "PATH": f"{work / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"),
                                                       os.environ.get("PYTHONPATH")]))}
    if settings.smoke:
        env["CUDA_VISIBLE_DEVICES"] = ""  # the same code path, on the CPU, anywhere
    now = time.monotonic()
    return Context(settings=settings, out=args.out, work=work, carry=args.carry,
                   archive=args.archive or args.carry / ARCHIVE_NAME,
                   import_check=tuple(m for m in args.import_check.split(",") if m),
                   env=env, started=now, deadline=now + settings.minutes * 60)


def run_check(args: argparse.Namespace) -> int:
    settings = SMOKE if args.smoke else GPU
    if args.minutes:
        settings = dataclasses.replace(settings, minutes=args.minutes)
    ctx = build_context(args, settings)
    ctx.report = {"smoke": settings.smoke, "command": " ".join(["gpu_check.py", *sys.argv[1:]]),
                  "date": time.strftime("%Y-%m-%d %H:%M:%S"), "seconds": 0.0,
                  "time_box_seconds": settings.minutes * 60, "phases": {}}
    chosen = args.phases.split(",")
    try:
        for name in (p for p in PHASES if p in chosen):
            record = run_phase(ctx, name, PHASE_FUNCTIONS[name])
            ctx.report["phases"][name] = record
            print(f"gpu_check: {name} {record['status']} in {record['seconds']} s"
                  f"{': ' + record['error'] if 'error' in record else ''}", flush=True)
            write_reports(ctx)
    finally:
        if args.work is None:
            shutil.rmtree(ctx.work, ignore_errors=True)
    bad = [n for n, r in ctx.report["phases"].items() if r["status"] in ("failed", "timed out")]
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child == "probe":
        child_probe(args.site, [m for m in args.modules.split(",") if m])
        return 0
    if args.child == "deepcnn":
        child_deepcnn(args.budget, args.images, args.json)
        return 0
    return run_check(args)


if __name__ == "__main__":
    sys.exit(main())
