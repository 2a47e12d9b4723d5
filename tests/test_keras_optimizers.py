"""`preset: keras` trains with Keras 3's own RMSprop and Adam rules (study 004), checked against
NumPy re-derivations of keras/src/optimizers/{rmsprop,adam}.py written here, independent of the
torch code; and the switch is real: torch's rules give other numbers on the same gradients."""

import io
import math

import numpy as np
import pytest
import torch

from cnnlab.config import OptimizerConfig
from cnnlab.errors import CnnlabError
from cnnlab.fastpath import FastPath
from cnnlab.train.keras_optimizers import KerasAdam, KerasRMSprop
from cnnlab.train.optimizers import build_optimizer

STEPS = 6
# Gradients from 1 down to 1e-6, so eps (1e-7) is negligible for some elements and dominant
# for others: a rule that moves eps inside or outside the root, or past the bias correction,
# is off by far more than float32 rounding on the small ones.
SCALES = np.array([1.0, 3e-2, 1e-3, 1e-4, 3e-5, 1e-6])


def gradients(steps: int = STEPS, seed: int = 0) -> list[np.ndarray]:
    """A fixed sequence of float32 gradients (as float64, so the reference sees the same
    values torch does), with mixed signs and the scales above."""
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(SCALES.size) * SCALES).astype(np.float32).astype(np.float64)
            for _ in range(steps)]


def start() -> np.ndarray:
    """Initial weights the size of a few updates, so a relative check on the weights is a
    relative check on what the optimizer did to them."""
    return np.array([0.5, -2e-3, 1e-3, -4e-4, 2e-4, -1e-4], np.float32).astype(np.float64)


def keras_rmsprop_reference(w: np.ndarray, grads: list[np.ndarray], lr: float, rho: float,
                            eps: float, momentum: float, centered: bool) -> np.ndarray:
    """Keras 3 RMSprop.update_step, line by line, in float64."""
    w, v, a, mom = w.copy(), np.zeros_like(w), np.zeros_like(w), np.zeros_like(w)
    for g in grads:
        v = rho * v + (1 - rho) * np.square(g)
        if centered:
            a = rho * a + (1 - rho) * g
            denominator = v - np.square(a) + eps
        else:
            denominator = v + eps
        increment = lr * g / np.sqrt(denominator)
        if momentum > 0:
            mom = momentum * mom + increment
            w = w - mom
        else:
            w = w - increment
    return w


def keras_adam_reference(w: np.ndarray, grads: list[np.ndarray], lr: float, beta1: float,
                         beta2: float, eps: float) -> np.ndarray:
    """Keras 3 Adam.update_step (amsgrad off), line by line, in float64."""
    w, m, v = w.copy(), np.zeros_like(w), np.zeros_like(w)
    for iterations, g in enumerate(grads):
        local_step = iterations + 1
        alpha = lr * math.sqrt(1 - beta2 ** local_step) / (1 - beta1 ** local_step)
        m = m + (g - m) * (1 - beta1)
        v = v + (np.square(g) - v) * (1 - beta2)
        w = w - (m * alpha) / (np.sqrt(v) + eps)
    return w


def run(opt_factory, grads: list[np.ndarray], device: str = "cpu") -> np.ndarray:
    """Weights after `opt_factory([w])` steps once per gradient, in float32 on `device`."""
    w = torch.nn.Parameter(torch.tensor(start(), dtype=torch.float32, device=device))
    opt = opt_factory([w])
    for g in grads:
        w.grad = torch.tensor(g, dtype=torch.float32, device=device)
        opt.step()
    return w.detach().cpu().double().numpy()


def assert_close(actual: np.ndarray, expected: np.ndarray) -> None:
    """Each element within 1e-6 of its own scale, the larger of where it began and where it
    ended: an element that moves from 1e-3 to 5e-6 keeps float32's rounding of 1e-3."""
    scale = np.maximum(np.abs(start()), np.abs(expected))
    worst = np.max(np.abs(actual - expected) / scale)
    assert worst <= 1e-6, f"off by {worst:.3g} of scale: {actual} vs Keras {expected}"


@pytest.mark.parametrize(("lr", "rho", "eps", "momentum", "centered"), [
    (1e-3, 0.9, 1e-7, 0.0, False),   # Keras' defaults: study 004's rmsprop
    (1e-2, 0.8, 1e-4, 0.0, False),
    (1e-3, 0.9, 1e-7, 0.9, False),
    (1e-3, 0.9, 1e-7, 0.5, True),
])
def test_rmsprop_is_keras_formula(lr, rho, eps, momentum, centered):
    grads = gradients()
    ours = run(lambda p: KerasRMSprop(p, lr=lr, alpha=rho, eps=eps, momentum=momentum,
                                      centered=centered), grads)
    assert_close(ours, keras_rmsprop_reference(start(), grads, lr, rho, eps, momentum, centered))


@pytest.mark.parametrize(("lr", "betas", "eps"), [
    (1e-3, (0.9, 0.999), 1e-7),  # Keras' defaults: study 004's adam
    (1e-2, (0.8, 0.99), 1e-5),
])
@pytest.mark.parametrize("steps", [1, STEPS])  # 1: the first step's bias correction alone
def test_adam_is_keras_formula(lr, betas, eps, steps):
    grads = gradients(steps)
    ours = run(lambda p: KerasAdam(p, lr=lr, betas=betas, eps=eps), grads)
    assert_close(ours, keras_adam_reference(start(), grads, lr, *betas, eps))


def relative_gap(a: np.ndarray, b: np.ndarray) -> float:
    """The largest difference in what two runs did to the weights, relative to the move."""
    moved = np.abs(a - start())
    return float(np.max(np.abs(a - b) / np.maximum(moved, 1e-30)))


@pytest.mark.parametrize(("keras", "torch_cls", "kwargs"), [
    (KerasRMSprop, torch.optim.RMSprop, {"lr": 1e-3, "alpha": 0.9, "eps": 1e-7}),
    (KerasAdam, torch.optim.Adam, {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-7}),
])
def test_torch_rule_differs_where_eps_matters(keras, torch_cls, kwargs):
    # Gradients ~1e-4 (the size a late-training CNN weight sees) with Keras' eps 1e-7: the same
    # hyperparameters, the two rules. If this gap were below 1e-3 the switch would be moot.
    grads = [np.full(SCALES.size, 1e-4) * (1 + 0.1 * k) for k in range(STEPS)]
    gap = relative_gap(run(lambda p: keras(p, **kwargs), grads),
                       run(lambda p: torch_cls(p, **kwargs), grads))
    assert gap > 1e-3, gap


@pytest.mark.parametrize(("name", "keras", "torch_cls"), [
    ("rmsprop", KerasRMSprop, torch.optim.RMSprop),
    ("adam", KerasAdam, torch.optim.Adam),
])
def test_keras_preset_builds_keras_rule(name, keras, torch_cls):
    params = [torch.nn.Parameter(torch.zeros(2))]
    built = build_optimizer(params, OptimizerConfig(name, preset="keras"))
    assert type(built) is keras
    assert built.defaults["eps"] == 1e-7 and built.defaults["lr"] == 1e-3
    assert type(build_optimizer(params, OptimizerConfig(name, preset="torch"))) is torch_cls
    assert type(build_optimizer(params, OptimizerConfig(name))) is torch_cls
    # A fused kernel asked for on CUDA does not apply: the Keras rule has none.
    fast = FastPath("cuda", None, channels_last=False, fused_optimizer=True, compile=False,
                    deterministic=False)
    assert type(build_optimizer(params, OptimizerConfig(name, preset="keras"), fast)) is keras


@pytest.mark.parametrize(("name", "cls"), [("sgd", torch.optim.SGD),
                                           ("adamw", torch.optim.AdamW)])
def test_keras_preset_leaves_sgd_and_adamw_on_torch(name, cls):
    params = [torch.nn.Parameter(torch.zeros(2))]
    assert type(build_optimizer(params, OptimizerConfig(name, preset="keras"))) is cls


def test_settings_keras_does_not_define_like_torch_are_refused():
    params = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(CnnlabError, match="KerasAdam: weight_decay must be 0 with preset keras"):
        build_optimizer(params, OptimizerConfig("adam", weight_decay=1e-4, preset="keras"))
    with pytest.raises(CnnlabError, match="KerasRMSprop: weight_decay must be 0"):
        KerasRMSprop(params, weight_decay=0.1)
    with pytest.raises(CnnlabError, match="KerasRMSprop: needs lr >= 0, 0 <= alpha < 1"):
        KerasRMSprop(params, alpha=1.5)
    params[0].grad = torch.zeros(2).to_sparse()
    with pytest.raises(CnnlabError, match="dense gradients only"):
        KerasAdam(params).step()


@pytest.mark.parametrize("factory", [
    lambda p: KerasRMSprop(p, momentum=0.9, centered=True),
    lambda p: KerasAdam(p),
], ids=["rmsprop", "adam"])
def test_state_dict_round_trip_is_bit_exact(factory):
    grads = [torch.tensor(g, dtype=torch.float32) for g in gradients(5)]
    w = torch.nn.Parameter(torch.tensor(start(), dtype=torch.float32))
    straight = factory([w])
    for g in grads:
        w.grad = g.clone()
        straight.step()

    w2 = torch.nn.Parameter(torch.tensor(start(), dtype=torch.float32))
    first = factory([w2])
    for g in grads[:3]:
        w2.grad = g.clone()
        first.step()
    saved = io.BytesIO()  # as the resume file does: torch.save, then weights_only load
    torch.save({"w": w2.detach().clone(), "opt": first.state_dict()}, saved)
    saved.seek(0)
    loaded = torch.load(saved, weights_only=True)
    w3 = torch.nn.Parameter(loaded["w"])
    resumed = factory([w3])
    resumed.load_state_dict(loaded["opt"])
    for g in grads[3:]:
        w3.grad = g.clone()
        resumed.step()
    assert torch.equal(w3.detach(), w.detach())


def test_momentum_raised_mid_run_by_a_scheduler():
    # OneCycleLR cycles `momentum` from its first step, on an RMSprop built with momentum 0:
    # the buffer is made when first needed.
    w = torch.nn.Parameter(torch.zeros(3))
    opt = KerasRMSprop([w])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=4)
    for _ in range(3):
        w.grad = torch.ones(3)
        opt.step()
        sched.step()
    assert opt.param_groups[0]["momentum"] > 0 and "momentum" in opt.state[w]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("factory", [lambda p: KerasRMSprop(p, momentum=0.9, centered=True),
                                     lambda p: KerasAdam(p)], ids=["rmsprop", "adam"])
def test_cuda_matches_keras_formula(factory):
    grads = gradients()
    on_gpu = run(factory, grads, device="cuda")
    assert_close(on_gpu, run(factory, grads))
