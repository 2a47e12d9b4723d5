"""The CUDA path on a real GPU: `pytest -m cuda tests/test_cuda.py`, which benchmarks/gpu_check.py
runs on a lent GPU machine. Every test here skips where torch sees no CUDA GPU.

- per-image AutoAugment on CUDA equals torchvision's own per-image ops on CUDA;
- bf16 autocast, channels_last, fused Adam/AdamW/SGD and torch.compile each train and score like
  the float32 eager loop, within tolerances that bf16 rounding and TF32 allow;
- BatchNorm under bf16 autocast keeps float32 statistics close to float32's;
- `deterministic: true` gives bit-identical weights twice for every registered model;
- a one-process NCCL run through torchrun, and a run stopped by SIGTERM resuming to the very
  weights of an uninterrupted one (both through the real stage script).
"""

from __future__ import annotations

import dataclasses
import json
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from test_autoaugment import (
    MAX_DIFFERING_SHARE,
    TOL,
    all_cases,
    images,  # noqa: F401  (a fixture this module's tests use)
    reference,
)
from test_resume import interrupt_after_first_save, outputs, project, run_train
from test_training import experiment, separable_dataset
from torch import nn

from cnnlab import fastpath
from cnnlab.config import OptimizerConfig, Speed, load_params
from cnnlab.data.autoaugment import apply_subpolicies, autoaugment_cifar10
from cnnlab.data.loader import DeviceSplit
from cnnlab.data.prepared import PreparedDataset, Split
from cnnlab.evaluate.scoring import predict
from cnnlab.fastpath import as_input, autocast, backends, compiled, prepare_model, resolve_fastpath
from cnnlab.models import MODELS, build_model
from cnnlab.train.loop import train
from cnnlab.train.optimizers import build_optimizer

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
CUDA = torch.device("cuda")
FP32_EAGER = Speed(precision="fp32", channels_last=False, fused_optimizer=False, compile=False)


# ---------------------------------------------------------------------------------- AutoAugment


def test_autoaugment_on_cuda_equals_torchvision_per_image_on_cuda(images):  # noqa: F811
    x, policy, apply, signs = all_cases(images, coins=[(1, 1), (1, 0), (0, 1)],
                                        signs=[(1, 1), (-1, -1)])
    x, policy, apply, signs = x.to(CUDA), policy.to(CUDA), apply.to(CUDA), signs.to(CUDA)
    out = apply_subpolicies(x, policy, apply, signs)
    assert out.device.type == "cuda" and out.dtype == torch.uint8
    ref = torch.stack([reference(x[i], int(policy[i]), apply[i].tolist(), signs[i].tolist())
                       for i in range(len(x))])
    diff = (out.int() - ref.int()).abs()
    assert int(diff.max()) <= TOL, f"{int((diff.flatten(1).amax(1) > TOL).sum())} images differ"
    assert (diff > 0).float().mean() <= MAX_DIFFERING_SHARE


def test_autoaugment_draws_on_cuda_are_seeded_and_per_image(images):  # noqa: F811
    x = images[:1].repeat(256, 1, 1, 1).to(CUDA)
    first = autoaugment_cifar10(x, torch.Generator(device=CUDA).manual_seed(0))
    again = autoaugment_cifar10(x, torch.Generator(device=CUDA).manual_seed(0))
    assert torch.equal(first, again)
    assert len(torch.unique(first.flatten(1), dim=0)) >= 30  # one input, many outputs


# ------------------------------------------------------------ the fast path against fp32 eager


def steps(model_name: str, speed: Speed, optimizer: str, n_steps: int = 3
          ) -> tuple[list[float], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(losses, the first step's gradients, weights after) of `n_steps` on fixed random batches,
    through the fast path's own pieces, as the loop uses them. The first step's gradients are
    the ones taken from the very same weights in every run."""
    fast = resolve_fastpath(speed, CUDA)
    torch.manual_seed(0)
    model = without_dropout(build_model(model_name, 10).to(CUDA))
    gen = torch.Generator(device=CUDA).manual_seed(0)
    cfg = OptimizerConfig(name=optimizer, lr=1e-3, momentum=0.9 if optimizer == "sgd" else None)
    trainable = [p for p in model.parameters() if p.requires_grad]
    losses = []
    with backends(fast):
        prepare_model(model, fast)
        net = compiled(model, fast)
        opt = build_optimizer(trainable, cfg, fast)
        for _ in range(n_steps):
            x = torch.randn(32, 3, 32, 32, device=CUDA, generator=gen)
            y = torch.randint(0, 10, (32,), device=CUDA, generator=gen)
            with autocast(fast):
                loss = F.cross_entropy(net(as_input(x, fast)).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if not losses:
                grads = {n: p.grad.detach().float().clone() for n, p in model.named_parameters()
                         if p.requires_grad}
            opt.step()
            losses.append(loss.item())
    weights = {k: v.detach().float().clone() for k, v in model.state_dict().items()}
    return losses, grads, weights


def without_dropout(model: nn.Module) -> nn.Module:
    """Dropout masks are drawn per element, and how many draws a kernel takes can depend on
    the dtype: off, so two precisions see the same network."""
    for module in model.modules():
        if isinstance(module, (nn.Dropout, nn.Dropout2d)):
            module.p = 0.0
    return model


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.cosine_similarity(a.flatten(), b.flatten(), dim=0))


@pytest.mark.parametrize("name,speed,tolerance", [
    ("bf16 autocast", dataclasses.replace(FP32_EAGER, precision="bf16"), (0.05, 0.97)),
    ("channels_last", dataclasses.replace(FP32_EAGER, channels_last=True), (0.005, 0.999)),
    ("cuda defaults", Speed(), (0.05, 0.97)),
])
def test_each_speed_switch_computes_the_fp32_loss_and_gradients(name, speed, tolerance):
    """deepcnn (batch norm) from the same weights and batches: losses of 3 steps within an
    absolute tolerance, every gradient of the first step pointing the same way (cosine
    similarity; bf16 gave 0.985 at worst on a CPU, channels_last 0.99999)."""
    ref_losses, ref_grads, _ = steps("deepcnn", FP32_EAGER, "adamw")
    losses, grads, _ = steps("deepcnn", speed, "adamw")
    loss_tol, min_cosine = tolerance
    assert np.allclose(losses, ref_losses, atol=loss_tol), (name, losses, ref_losses)
    worst = min((cosine(grads[k], ref_grads[k]), k) for k in ref_grads)
    assert worst[0] >= min_cosine, (name, worst)


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_optimizers_step_like_the_unfused_ones(optimizer, channels_last):
    """The fused kernel computes the same update from the same gradients: weights after 3
    steps equal to float32 rounding. resnet18_tl has 1x1 convolutions, whose channels_last
    gradients may come in other strides than their weights (prepare_model aligns them). Both
    runs are deterministic, so the gradients the two optimizers receive are the same."""
    base = dataclasses.replace(FP32_EAGER, channels_last=channels_last, deterministic=True)
    _, _, ref = steps("resnet18_tl", base, optimizer)
    _, _, fused = steps("resnet18_tl", dataclasses.replace(base, fused_optimizer=True), optimizer)
    for key in ref:
        assert torch.allclose(fused[key], ref[key], rtol=1e-5, atol=1e-6), key


VARIANTS = {
    "bf16 autocast": dataclasses.replace(FP32_EAGER, precision="bf16"),
    "channels_last": dataclasses.replace(FP32_EAGER, channels_last=True),
    "fused": dataclasses.replace(FP32_EAGER, fused_optimizer=True),
    "cuda defaults": Speed(),
}


@pytest.fixture(scope="module")
def fp32_eager_run():
    data = separable_dataset(n=512)
    return train(experiment(speed=FP32_EAGER, device="cuda"), data, CUDA, progress=False), data


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_training_and_scoring_match_fp32_eager(variant, optimizer, fp32_eager_run):
    ref, data = fp32_eager_run
    cfg = OptimizerConfig(name=optimizer, lr=1e-3 if optimizer != "sgd" else 0.05,
                          momentum=0.9 if optimizer == "sgd" else None)
    exp = experiment(speed=VARIANTS[variant], optimizer=cfg, device="cuda")
    result = train(exp, data, CUDA, progress=False)
    if optimizer == "adam":  # the reference run's optimizer: compare predictions too
        test = DeviceSplit(data.split("test"), CUDA)
        ours = predict(result.model, test, exp)
        theirs = predict(ref.model, test, experiment(speed=FP32_EAGER, device="cuda"))
        assert abs(ours.accuracy - theirs.accuracy) <= 0.02
        assert np.abs(ours.probs - theirs.probs).mean() < 0.05
    assert result.history[-1]["train_accuracy"] > 0.9, result.history
    assert all(p.dtype == torch.float32 for p in result.model.parameters())


class RecordingBackend:
    """A torch.compile backend that records each graph's input shapes and whether it was traced
    with a symbolic size (dynamo then passes the size itself as an input), then hands the graph
    to inductor, as cnnlab's own compile does."""

    def __init__(self):
        self.shapes: list[list[tuple]] = []
        self.dynamic: list[bool] = []

    def __call__(self, gm, example_inputs):
        from torch._inductor.compile_fx import compile_fx

        self.shapes.append([tuple(t.shape) for t in example_inputs if isinstance(t, torch.Tensor)])
        self.dynamic.append(not all(isinstance(t, torch.Tensor) for t in example_inputs))
        return compile_fx(gm, example_inputs)


def test_compile_trains_like_eager_with_one_static_graph_per_batch_shape(monkeypatch):
    backend = RecordingBackend()
    monkeypatch.setattr(fastpath, "COMPILE_BACKEND", backend)
    data = separable_dataset(n=70)  # batches of 32, 32 and 6
    eager = train(experiment(epochs=3, speed=FP32_EAGER, device="cuda"), data, CUDA,
                  progress=False)
    exp = experiment(epochs=3, speed=dataclasses.replace(FP32_EAGER, compile=True),
                     device="cuda")
    compiled_run = train(exp, data, CUDA, progress=False)
    batch_sizes = sorted({shape[0] for graph in backend.shapes for shape in graph
                          if shape[1:] == (3, 32, 32)})  # the images, not the conv weights
    assert len(backend.shapes) == 2 and batch_sizes == [6, 32], backend.shapes
    assert backend.dynamic == [False, False]  # the last batch got a static graph of its own
    assert compiled_run.history[-1]["train_accuracy"] > 0.9
    assert abs(compiled_run.history[-1]["train_loss"] - eager.history[-1]["train_loss"]) < 0.05


def test_compiled_outputs_are_not_overwritten_by_the_next_call():
    """CUDA graphs (mode reduce-overhead) reuse one output buffer per replay; cnnlab compiles
    without them, so an earlier output keeps its values after another call."""
    fast = resolve_fastpath(dataclasses.replace(FP32_EAGER, compile=True), CUDA)
    torch.manual_seed(0)
    model = build_model("cnn", 10).to(CUDA).eval()
    net = compiled(model, fast)
    a, b = (torch.randn(8, 3, 32, 32, device=CUDA) for _ in range(2))
    with torch.no_grad():
        first = net(a)
        kept = first.clone()
        for _ in range(3):
            net(b)
        assert torch.equal(first, kept)
        assert torch.allclose(first, model(a), atol=1e-4)


def test_batchnorm_under_bf16_autocast_keeps_float32_statistics_close_to_fp32():
    stats = {}
    for name, speed in (("fp32", FP32_EAGER), ("bf16", Speed())):
        fast = resolve_fastpath(speed, CUDA)
        torch.manual_seed(0)
        model = prepare_model(without_dropout(build_model("deepcnn", 10).to(CUDA)), fast)
        gen = torch.Generator(device=CUDA).manual_seed(1)
        x = torch.randn(128, 3, 32, 32, device=CUDA, generator=gen)
        with backends(fast), autocast(fast), torch.no_grad():
            model(as_input(x, fast))
        stats[name] = {k: v for k, v in model.state_dict().items() if "running" in k}
    for key, value in stats["bf16"].items():
        assert value.dtype == torch.float32 and torch.isfinite(value).all(), key
        assert torch.allclose(value, stats["fp32"][key], rtol=0.05, atol=0.02), key


# ------------------------------------------------------------------------------- determinism


def synthetic(exp, n: int = 64) -> PreparedDataset:
    """Random images shaped like the experiment's dataset: COCO-5's 64x64 with its val split,
    or CIFAR-10's 32x32 (whose val split, if any, the experiment carves from train)."""
    classes, side = (tuple("abcde"), 64) if exp.dataset == "coco5" else (tuple("abcdefghij"), 32)
    rng = np.random.default_rng(0)

    def split(size: int) -> Split:
        return Split(rng.integers(0, 256, (size, side, side, 3), dtype=np.uint8),
                     rng.integers(0, len(classes), size).astype(np.int64))

    splits = {"train": split(n), "test": split(16)}
    if exp.dataset == "coco5":
        splits["val"] = split(16)
    return PreparedDataset("synthetic", classes, splits)


def recipe_of(model: str):
    """The params.yaml experiment that trains `model`, cut to one short epoch, on CUDA,
    deterministic, with no pretrained weights to fetch."""
    exp = next(e for e in load_params(ROOT / "params.yaml").experiments.values()
               if e.model == model)
    return dataclasses.replace(
        exp, weights="none", epochs=1, device="cuda", eval_each_epoch=False, keep_best=False,
        also_evaluate=(), train_fraction=1.0, eval_fraction=1.0, train_subset=None,
        speed=dataclasses.replace(exp.speed, deterministic=True))


@pytest.mark.parametrize("model", sorted(MODELS))
def test_deterministic_gives_identical_weights_twice(model):
    exp = recipe_of(model)
    data = synthetic(exp)
    first, again = (train(exp, data, CUDA, progress=False).model.state_dict() for _ in range(2))
    different = [k for k in first if not torch.equal(first[k], again[k])]
    assert not different, f"{model}: {different[:3]} differ between two deterministic runs"


# ----------------------------------------------------------- the stage script: NCCL and SIGTERM


def test_one_process_nccl_run_through_torchrun(tmp_path):
    from dvc_project import edit_params
    from test_ddp import ddp_project, finish, torchrun

    env = ddp_project(tmp_path)
    edit_params(tmp_path, lambda p: p["experiments"]["toy"].update(device="cuda"))
    stdout = finish(torchrun(tmp_path, env, 1))
    summary = json.loads((tmp_path / "metrics/toy/train/metrics.json").read_text())
    assert summary["device"].startswith("cuda (") and "toy: trained 4 epochs" in stdout
    assert summary["test_accuracy"] > 0.7  # chance 0.1; the CPU runs reach about 0.78


def cuda_project(root) -> dict:
    """tests/test_resume.py's project, on CUDA, deterministic, long enough to interrupt."""
    env = project(root)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["experiments"]["toy"].update(device="cuda", epochs=12,
                                        speed={"deterministic": True})
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return env


def test_sigterm_then_resume_gives_the_uninterrupted_weights_on_cuda(tmp_path):
    reference_root, root = tmp_path / "reference", tmp_path / "interrupted"
    reference_root.mkdir()
    root.mkdir()
    proc = run_train(reference_root, cuda_project(reference_root))
    assert proc.wait(timeout=600) == 0, proc.stderr.read()
    env = cuda_project(root)
    proc = interrupt_after_first_save(root, env, signal.SIGTERM)
    assert proc.returncode == 143, proc.stderr.read()
    again = run_train(root, env)
    stdout, stderr = again.communicate(timeout=600)
    assert again.returncode == 0, stderr
    assert "resuming after epoch" in stdout
    assert outputs(root) == outputs(reference_root)  # bit-identical weights, same summary
