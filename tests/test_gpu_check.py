"""What the GPU path relies on, checked on the CPU:

- benchmarks/gpu_check.py in its smoke mode: the same phases as on a lent GPU machine (install
  from carried wheels, prepare through `dvc repro`, the CUDA tests, the speed harness, the trio
  through `dvc repro`, deepcnn in a time box) at tiny sizes, with real subprocesses; a failing
  phase is recorded and the next one still runs;
- the per-GPU locks that spread DVC's queue workers over the GPUs (cnnlab.devices), with the
  GPU count simulated, across real processes;
- the known CUDA failure modes that cnnlab.fastpath handles, as far as the CPU shows them:
  CUBLAS_WORKSPACE_CONFIG set in time, deterministic adaptive pooling, one static compiled graph
  per batch shape and no CUDA graphs, gradients laid out like their channels_last parameters
  for the fused optimizers, BatchNorm statistics under bf16 autocast.
"""

from __future__ import annotations

import base64
import dataclasses
import fcntl
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from cifar_archives import write_imagefolder_archive
from test_training import experiment, separable_dataset
from torch import nn

from cnnlab import devices, fastpath
from cnnlab.config import Speed
from cnnlab.devices import claimed_device, hold_device, resolve_device
from cnnlab.errors import CnnlabError
from cnnlab.fastpath import (
    DeterministicAdaptiveAvgPool2d,
    align_grad_layouts,
    autocast,
    prepare_model,
    resolve_fastpath,
)
from cnnlab.models import build_model
from cnnlab.train.loop import train

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
CPU = torch.device("cpu")
PROBE = "cnnlab_gpu_check_probe"


def load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


gpu_check = load_gpu_check()


# ------------------------------------------------------------------------ the smoke run itself


def urlsafe_digest(data: bytes) -> str:
    """A RECORD line's hash: urlsafe base64 of the sha256, unpadded."""
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode().rstrip("=")


def probe_wheel(folder: Path) -> Path:
    """A minimal pure-Python wheel, as pip download would save one: a package, its METADATA
    (one requirement met here, one not), WHEEL and RECORD."""
    dist = f"{PROBE}-0.1.dist-info"
    files = {f"{PROBE}/__init__.py": b"VALUE = 42\n",
             f"{dist}/METADATA": (b"Metadata-Version: 2.1\nName: cnnlab-gpu-check-probe\n"
                                  b"Version: 0.1\nRequires-Dist: numpy\n"
                                  b"Requires-Dist: no-such-distribution-cnnlab>=1\n"),
             f"{dist}/WHEEL": (b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\n"
                               b"Tag: py3-none-any\n")}
    record = [f"{name},sha256={urlsafe_digest(data)},{len(data)}" for name, data in files.items()]
    files[f"{dist}/RECORD"] = ("\n".join(record + [f"{dist}/RECORD,,"]) + "\n").encode()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{PROBE}-0.1-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


@pytest.fixture(scope="module")
def carry(tmp_path_factory) -> Path:
    """A carry folder like build_gpu_carry.py makes: wheels/ and a CIFAR-10 archive (a tiny
    generated one in the real archive's ImageFolder-of-JPEGs layout)."""
    folder = tmp_path_factory.mktemp("carry")
    probe_wheel(folder / "wheels")
    write_imagefolder_archive(folder / gpu_check.ARCHIVE_NAME,
                              per_class={"train": 4, "test": 2}, ext="jpg")
    return folder


def run_gpu_check(out: Path, *args: str, timeout: float = 400) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), str(out), "--smoke", *args],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.fixture(scope="module")
def smoke(carry, tmp_path_factory) -> tuple[subprocess.CompletedProcess, dict, str]:
    out = tmp_path_factory.mktemp("out")
    done = run_gpu_check(out, "--carry", str(carry), "--import-check", f"{PROBE},dvc")
    report = json.loads((out / "gpu_check.json").read_text())
    return done, report, (out / "gpu_check.md").read_text()


def test_smoke_run_passes_every_phase_on_the_cpu(smoke):
    done, report, _ = smoke
    assert done.returncode == 0, done.stdout + done.stderr
    statuses = {name: phase["status"] for name, phase in report["phases"].items()}
    assert statuses == {"install": "passed", "prepare": "passed", "cuda_tests": "skipped",
                        "speed": "passed", "trio": "passed", "deepcnn": "passed"}
    assert report["smoke"] and report["seconds"] <= report["time_box_seconds"]


def test_smoke_install_uses_the_carried_wheels_and_reports_unmet_requirements(smoke):
    install = smoke[1]["phases"]["install"]
    assert install["wheels"] == 1 and install["imports"] == {PROBE: "ok", "dvc": "ok"}
    assert install["unmet"] == ["cnnlab-gpu-check-probe needs no-such-distribution-cnnlab>=1: "
                                "not installed"]


def test_smoke_prepares_through_dvc_and_collects_every_cuda_test_as_skipped(smoke):
    phases = smoke[1]["phases"]
    assert phases["prepare"]["via"] == "dvc repro"
    assert phases["prepare"]["splits"] == {"train": 40, "test": 20}
    tests = phases["cuda_tests"]
    assert tests["failed"] == 0 and tests["passed"] == 0 and tests["skipped"] >= 20
    assert "CUDA" in tests["note"]


def test_smoke_speed_trio_and_deepcnn_give_their_figures(smoke):
    phases = smoke[1]["phases"]
    for name in ("deepcnn", "cnn_aug"):
        figures = phases["speed"]["results"][name]
        assert figures["train_images_per_second"] > 0 and figures["ratio_to_study"] > 0
        assert 0 < figures["share_of_matmul_rate"] and figures["device"].startswith("cpu")
    assert set(phases["trio"]["results"]) == {"ann", "cnn", "cnn_aug"}
    assert phases["trio"]["via"] == "dvc repro"
    assert all(r["epochs"] == 1 for r in phases["trio"]["results"].values())
    deep = phases["deepcnn"]
    assert deep["epochs_planned"] == 150 and 1 <= deep["epochs_done"] < 150
    assert all("test_accuracy" in row for row in deep["rows"])
    assert deep["recipe_seconds_how"].startswith("projected")


def test_smoke_summary_lists_targets_and_phases(smoke):
    _, report, md = smoke
    assert len(report["targets"]) == 5
    assert all(t["target"].startswith("deepcnn") for t in report["targets"])
    assert all(t["met"] is None for t in report["targets"])  # a CPU smoke run judges nothing
    for heading in ("## Targets", "## Phases", "## CUDA tests", "## Speed harness",
                    "## Study-000 trio (dvc repro)", "## deepcnn, full recipe"):
        assert heading in md
    assert "### deepcnn on cpu" in md and "### cnn_aug on cpu" in md


def test_a_failing_phase_is_recorded_and_the_next_still_runs(tmp_path):
    broken = tmp_path / "carry"
    broken.mkdir()
    (broken / gpu_check.ARCHIVE_NAME).write_bytes(b"\x1f\x8b not really gzip")
    done = run_gpu_check(tmp_path / "out", "--carry", str(broken), "--phases",
                         "prepare,deepcnn")
    assert done.returncode == 1
    report = json.loads((tmp_path / "out/gpu_check.json").read_text())
    prepare, deep = report["phases"]["prepare"], report["phases"]["deepcnn"]
    assert prepare["status"] == "failed" and "\n" not in prepare["error"]
    # The stage's own one-line error, not dvc's "failed to reproduce" after it.
    assert prepare["error"].startswith("PhaseFailed: dvc repro exited ")
    assert "error: " in prepare["error"] and "archive" in prepare["error"]
    assert deep["status"] == "failed" and "prepared dataset not found" in deep["error"]
    assert "| prepare | failed |" in (tmp_path / "out/gpu_check.md").read_text()


# -------------------------------------------------------------------- gpu_check's own helpers


def test_a_phase_past_its_time_box_is_killed_with_its_children(tmp_path):
    ctx = gpu_check.Context(settings=gpu_check.SMOKE, out=tmp_path, work=tmp_path,
                            carry=tmp_path, archive=tmp_path, import_check=(),
                            env=dict(os.environ), started=time.monotonic(),
                            deadline=time.monotonic() + 60)
    grandchild = tmp_path / "grandchild.pid"
    code = ("import subprocess, time, pathlib; p = subprocess.Popen(['sleep', '60']); "
            f"pathlib.Path({str(grandchild)!r}).write_text(str(p.pid)); time.sleep(60)")
    with pytest.raises(gpu_check.PhaseTimeout, match="ran past its 2 s and was killed"):
        gpu_check.run_logged(ctx, "sleepy", [sys.executable, "-c", code], tmp_path, 2)
    pid = int(grandchild.read_text())
    deadline = time.monotonic() + 5
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(pid), "the phase's grandchild outlived its time box"


def alive(pid: int) -> bool:
    """Running, not merely a zombie: an orphan killed here waits for the container's init,
    which may never reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_budget_logger_stops_at_the_end_of_the_epoch_that_leaves_too_little(monkeypatch):
    clock = iter([0.0, 10.0, 20.0, 31.0])
    monkeypatch.setattr(gpu_check.time, "monotonic", lambda: next(clock))
    logger = gpu_check.BudgetLogger(budget=40)
    logger.log_epoch(1, 10, {"test_accuracy": 0.3})  # 10 s: 10 more fit
    logger.log_epoch(2, 20, {"test_accuracy": 0.4})  # 20 s: 10 more fit
    with pytest.raises(gpu_check.OutOfBudget):
        logger.log_epoch(3, 30, {"test_accuracy": 0.5})  # 31 s: 11 more would end at 42
    summary = gpu_check.deepcnn_summary(150, logger.rows, None, "cuda (H200)")
    assert summary["epochs_done"] == 3 and summary["best_test_accuracy"] == 0.5
    assert summary["mean_epoch_wall_seconds"] == pytest.approx(10.5)  # epoch 1 warms up
    assert summary["recipe_seconds"] == pytest.approx(1575)


def test_targets_say_met_missed_or_not_measured():
    speed = {"results": {"deepcnn": {"train_images_per_second": 52000, "ratio_to_study": 4.2,
                                     "share_of_matmul_rate": 0.35}}}
    deep = {"recipe_seconds": 170.0, "recipe_seconds_how": "measured", "completed": True,
            "epochs_done": 150, "epochs_planned": 150, "best_test_accuracy": 0.941}
    met = [t["met"] for t in gpu_check.targets({"speed": speed, "deepcnn": deep}, smoke=False)]
    assert met == [True, False, True, True, None]  # accuracy needs 3 seeds: not from one run
    empty = gpu_check.targets({}, smoke=False)
    assert [t["met"] for t in empty] == [None] * 5 and all(t["goal"] for t in empty)


# ------------------------------------------------------------------------- GPUs for DVC queues


@pytest.fixture
def fake_gpus(monkeypatch, tmp_path):
    """Simulate `count` CUDA GPUs for cnnlab.devices; returns the GPU indices set current."""
    chosen: list[int] = []

    def simulate(count: int) -> list[int]:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
        return chosen

    monkeypatch.setenv(devices.LOCK_DIR_ENV, str(tmp_path / "locks"))
    monkeypatch.delenv("RANK", raising=False)
    yield simulate
    for index in devices.held_gpus():
        devices.release_gpu(index)


def test_one_gpu_is_shared_as_before_and_locks_nothing(fake_gpus, tmp_path):
    fake_gpus(1)
    assert hold_device("auto") == torch.device("cuda") == hold_device("cuda")
    assert devices.held_gpus() == [] and not (tmp_path / "locks").exists()


def test_cuda_k_takes_exactly_k_and_auto_the_first_free(fake_gpus, tmp_path):
    chosen = fake_gpus(4)
    assert hold_device("cuda:2") == torch.device("cuda", 2)
    assert hold_device("auto") == torch.device("cuda", 2)  # this process holds one already
    assert devices.held_gpus() == [2] and chosen == [2, 2]
    assert (tmp_path / "locks/gpu2.lock").read_text() == f"pid {os.getpid()} cuda:2\n"
    with claimed_device("cuda:0") as device:
        assert device == torch.device("cuda", 0) and devices.held_gpus() == [0, 2]
    assert devices.held_gpus() == [2]  # released on the way out, the earlier claim kept
    fd = os.open(tmp_path / "locks/gpu0.lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free again: no BlockingIOError
    os.close(fd)


def test_under_torchrun_each_rank_holds_its_local_rank(fake_gpus, monkeypatch):
    fake_gpus(2)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert hold_device("auto") == torch.device("cuda", 1) and devices.held_gpus() == [1]


@pytest.mark.parametrize("name,message", [
    ("cuda:4", r"device: cuda:4 was asked for but only 4 CUDA GPUs are visible here "
               r"\(cuda:0 to cuda:3\)"),
    ("cuda:x", r"device: 'cuda:x' is not a device \(use auto, cpu, mps, cuda or cuda:<index>\)"),
    ("gpu", r"device: 'gpu' is not a device"),
])
def test_bad_device_names_are_one_line_errors(fake_gpus, name, message):
    fake_gpus(4)
    with pytest.raises(CnnlabError, match=message):
        resolve_device(name)


def test_a_lock_folder_that_cannot_be_made_is_a_one_line_error(fake_gpus, monkeypatch, tmp_path):
    fake_gpus(2)
    (tmp_path / "a_file").write_text("")
    monkeypatch.setenv(devices.LOCK_DIR_ENV, str(tmp_path / "a_file" / "locks"))
    with pytest.raises(CnnlabError, match=r"cannot create the GPU lock folder .* \(set "
                                          r"CNNLAB_GPU_LOCK_DIR to a writable folder\)"):
        hold_device("auto")


WORKER = textwrap.dedent("""
    import sys, torch
    torch.cuda.is_available = lambda: True
    torch.cuda.device_count = lambda: int(sys.argv[1])
    torch.cuda.set_device = lambda index: None
    from cnnlab.devices import hold_device
    from cnnlab.errors import CnnlabError
    try:
        device = hold_device(sys.argv[2], wait=sys.argv[3] == "wait")
    except CnnlabError as exc:
        print("error:", exc, flush=True)
        sys.exit(1)
    print(device.index, flush=True)
    sys.stdin.read()  # hold the GPU until the test closes stdin or kills this process
""")


def worker(tmp_path: Path, gpus: int, name: str = "auto", wait: bool = True) -> subprocess.Popen:
    """A process standing in for one DVC queue worker's training stage."""
    env = {**os.environ, devices.LOCK_DIR_ENV: str(tmp_path / "locks"),
           "PYTHONPATH": str(ROOT / "src")}
    env.pop("RANK", None)
    return subprocess.Popen([sys.executable, "-c", WORKER, str(gpus), name,
                             "wait" if wait else "nowait"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_queue_workers_spread_over_the_gpus_and_a_killed_one_frees_its_gpu(tmp_path):
    holders = [worker(tmp_path, 3) for _ in range(3)]
    taken = {int(p.stdout.readline()): p for p in holders}
    assert sorted(taken) == [0, 1, 2]  # three workers, three GPUs, none shared

    busy = worker(tmp_path, 3, "cuda:1", wait=False)
    assert busy.wait(timeout=60) == 1
    assert busy.stdout.read().strip().startswith("error: cuda:1 held by other cnnlab runs")

    waiting = worker(tmp_path, 3)  # a fourth worker: every GPU is held, so it waits
    assert "all 3 GPUs held by other cnnlab runs; waiting" in waiting.stderr.readline()
    assert waiting.poll() is None
    taken[1].kill()  # SIGKILL: no cleanup runs, the kernel drops the flock
    taken[1].wait(timeout=30)
    assert int(waiting.stdout.readline()) == 1
    for proc in [*taken.values(), waiting]:
        if proc.poll() is None:
            proc.stdin.close()
            proc.wait(timeout=30)
    for proc in [*holders, busy, waiting]:
        for stream in (proc.stdout, proc.stderr):
            stream.close()


# ------------------------------------------------------------------ CUDA failure modes, on CPU


def test_importing_the_fast_path_sets_cublas_config_unless_the_user_did():
    code = "import os, cnnlab.fastpath; print(os.environ['CUBLAS_WORKSPACE_CONFIG'])"
    env = {k: v for k, v in os.environ.items() if k != "CUBLAS_WORKSPACE_CONFIG"}
    run = [sys.executable, "-c", code]
    assert subprocess.run(run, env=env, capture_output=True, text=True,
                          check=True).stdout.strip() == ":4096:8"
    env["CUBLAS_WORKSPACE_CONFIG"] = ":16:8"
    assert subprocess.run(run, env=env, capture_output=True, text=True,
                          check=True).stdout.strip() == ":16:8"


def test_a_deterministic_cuda_run_refuses_a_cublas_config_that_cannot_work(monkeypatch):
    cudnn = torch.backends.cudnn
    before = (cudnn.benchmark, cudnn.deterministic, torch.are_deterministic_algorithms_enabled())
    run = resolve_fastpath(Speed(deterministic=True), "cuda")
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":0:0")
    with pytest.raises(CnnlabError, match=r"deterministic: true needs CUBLAS_WORKSPACE_CONFIG "
                                          r"set to :4096:8 or :16:8, but it is ':0:0'"):
        with fastpath.backends(run):
            pass
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    monkeypatch.setattr(fastpath, "_CUBLAS_SET_LATE", True)  # CUDA had started before import
    with pytest.raises(CnnlabError, match=r"export CUBLAS_WORKSPACE_CONFIG=:4096:8 before "
                                          r"starting Python"):
        with fastpath.backends(run):
            pass
    assert (cudnn.benchmark, cudnn.deterministic,
            torch.are_deterministic_algorithms_enabled()) == before


def backward_ops(output: torch.Tensor) -> set[str]:
    """The names of every autograd node behind `output`."""
    seen, stack = set(), [output.grad_fn]
    while stack:
        node = stack.pop()
        if node is not None and node.name() not in seen:
            seen.add(node.name())
            stack.extend(fn for fn, _ in node.next_functions)
    return seen


@pytest.mark.parametrize("side,output_size", [(7, 1), (7, (1, 1)), (7, 7), (14, 7), (1, 7),
                                              (8, (2, None)), (6, (3, 2))])
@pytest.mark.parametrize("channels_last", [False, True])
def test_deterministic_pooling_equals_adaptive_average_pooling(side, output_size, channels_last):
    x = torch.randn(2, 3, side, side, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours = DeterministicAdaptiveAvgPool2d(output_size)(a)
    theirs = F.adaptive_avg_pool2d(b, output_size)
    assert ours.shape == theirs.shape and torch.allclose(ours, theirs)
    weights = torch.randn_like(theirs)
    (ours * weights).sum().backward()
    (theirs * weights).sum().backward()
    assert torch.allclose(a.grad, b.grad)
    # The op torch has no deterministic CUDA backward for is not in the graph.
    assert "AdaptiveAvgPool2DBackward0" not in backward_ops(ours)


def test_deterministic_pooling_refuses_sizes_that_do_not_divide_in_one_line():
    with pytest.raises(CnnlabError, match=r"deterministic: true on CUDA cannot pool 5 pixels "
                                          r"to 3 .*; use deterministic: false or an input size "
                                          r"divisible by 3"):
        DeterministicAdaptiveAvgPool2d(3)(torch.randn(1, 2, 5, 5))


@pytest.mark.parametrize("model", ["deepcnn", "resnet18_tl", "vgg16_tl"])
def test_deterministic_cuda_runs_pool_deterministically_with_the_same_state_dict(model):
    net = build_model(model, 10)
    keys = list(net.state_dict())
    pools = [m for m in net.modules() if type(m) is nn.AdaptiveAvgPool2d]
    assert pools, "the model pools adaptively: the case this handles"
    prepare_model(net, resolve_fastpath(Speed(deterministic=True, channels_last=False), "cuda"))
    assert not [m for m in net.modules() if type(m) is nn.AdaptiveAvgPool2d]
    assert list(net.state_dict()) == keys
    cpu = build_model(model, 10)
    prepare_model(cpu, resolve_fastpath(Speed(deterministic=True), "cpu"))
    assert [m for m in cpu.modules() if type(m) is nn.AdaptiveAvgPool2d]  # the CPU is left be


def test_gradients_take_their_channels_last_parameters_strides():
    """A 1x1 conv weight (16, 8, 1, 1) fed a channels_last input gets its gradient in other
    strides than its own; the fused CUDA kernels compare strides and refuse such a pair."""
    def conv_grad_strides(align: bool) -> tuple[tuple, tuple, torch.Tensor]:
        torch.manual_seed(0)
        conv = nn.Conv2d(8, 16, 1)
        if align:
            align_grad_layouts(conv)
        x = torch.randn(4, 8, 5, 5).contiguous(memory_format=torch.channels_last)
        for _ in range(2):  # the second backward accumulates into the aligned gradient
            conv(x).sum().backward()
        return conv.weight.stride(), conv.weight.grad.stride(), conv.weight.grad

    param, grad, raw = conv_grad_strides(align=False)
    assert param != grad  # the hazard is real on this torch
    param, grad, aligned = conv_grad_strides(align=True)
    assert param == grad and torch.allclose(aligned, raw)


def test_prepare_model_aligns_gradients_for_a_fused_cuda_optimizer():
    net = nn.Sequential(nn.Conv2d(8, 16, 1), nn.Flatten(), nn.Linear(16 * 25, 2))
    prepare_model(net, resolve_fastpath(Speed(channels_last=False), "cuda"))  # fused on CUDA
    x = torch.randn(4, 8, 5, 5).contiguous(memory_format=torch.channels_last)
    net(x).sum().backward()
    assert all(p.grad.stride() == p.stride() for p in net.parameters())


class RecordingEagerBackend:
    """A torch.compile backend that runs graphs eagerly and records, for each, the batch sizes
    of its image inputs and whether it was traced with a symbolic size."""

    def __init__(self):
        self.batches: list[list[int]] = []
        self.dynamic: list[bool] = []

    def __call__(self, gm, example_inputs):
        self.batches.append([t.shape[0] for t in example_inputs
                             if isinstance(t, torch.Tensor) and t.shape[1:] == (3, 32, 32)])
        self.dynamic.append(not all(isinstance(t, torch.Tensor) for t in example_inputs))
        return gm.forward


def test_compile_gives_the_short_last_batch_a_static_graph_of_its_own(monkeypatch):
    backend = RecordingEagerBackend()
    monkeypatch.setattr(fastpath, "COMPILE_BACKEND", backend)
    exp = experiment(epochs=3, speed=Speed(compile=True, precision="fp32"))
    result = train(exp, separable_dataset(n=70), CPU, progress=False)  # batches 32, 32, 6
    assert result.steps == 9
    assert backend.batches == [[32], [6]]  # two graphs for three epochs, no recompiles after
    assert backend.dynamic == [False, False]  # torch's default would trace the 6 symbolically


def test_compile_asks_inductor_for_static_shapes_and_no_cuda_graphs(monkeypatch):
    seen = {}

    def fake_compile(net, **kwargs):
        seen.update(kwargs)
        return net

    monkeypatch.setattr(torch, "compile", fake_compile)
    net = nn.Linear(2, 2)
    fast = resolve_fastpath(Speed(compile=True), "cuda")
    assert fastpath.compiled(net, fast) is net
    assert seen == {"backend": "inductor", "dynamic": False,
                    "options": {"triton.cudagraphs": False}}
    seen.clear()
    assert fastpath.compiled(net, dataclasses.replace(fast, compile=False)) is net and not seen


def test_batchnorm_statistics_under_bf16_autocast_stay_float32_and_close():
    stats = {}
    for precision in ("fp32", "bf16"):
        fast = resolve_fastpath(Speed(precision=precision, channels_last=True), "cpu")
        torch.manual_seed(0)
        net = prepare_model(build_model("deepcnn", 10), fast)
        for module in net.modules():
            if isinstance(module, (nn.Dropout, nn.Dropout2d)):
                module.p = 0.0  # the same network in both precisions
        x = torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(1))
        with autocast(fast), torch.no_grad():
            net(x.contiguous(memory_format=torch.channels_last))
        stats[precision] = {k: v for k, v in net.state_dict().items() if "running" in k}
    for key, value in stats["bf16"].items():
        assert value.dtype == torch.float32 and torch.isfinite(value).all(), key
        assert torch.allclose(value, stats["fp32"][key], rtol=0.05, atol=0.02), key


def test_the_probe_reports_imports_and_unmet_requirements(tmp_path):
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                    "--target", str(site), str(probe_wheel(tmp_path / "wheels"))], check=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT / "src")])}
    done = subprocess.run([sys.executable, str(SCRIPT), "--child", "probe", "--site", str(site),
                           "--modules", f"{PROBE},no_such_module_cnnlab"], env=env,
                          capture_output=True, text=True, check=True)
    probe = json.loads(done.stdout.strip().splitlines()[-1])
    assert probe["imports"] == {PROBE: "ok", "no_such_module_cnnlab":
                                "ModuleNotFoundError: No module named 'no_such_module_cnnlab'"}
    assert probe["unmet"] == ["cnnlab-gpu-check-probe needs no-such-distribution-cnnlab>=1: "
                              "not installed"]
    assert probe["machine"]["cpus"] == os.cpu_count()

