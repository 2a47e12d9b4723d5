"""Keras 3's RMSprop and Adam updates as torch optimizers, for study 004's `preset: keras`.

Study 004 trained with `model.compile(optimizer='adam' | 'rmsprop')` under Keras 3 (its logs
show Keras 3's progress bar, `625/625 ━━━━…`; tf.keras 2 drew `[======]`). torch.optim has
no option for either update below, and with Keras' eps of 1e-7 they differ from torch's where
the gradients are small, so the switch reproduces the study's rule instead of approximating it.

The formulas, from keras/src/optimizers/{rmsprop,adam}.py (keras-team/keras, Keras 3):

RMSprop (`update_step`)::

    v     = rho * v + (1 - rho) * g**2
    a     = rho * a + (1 - rho) * g                  # centered only
    denom = v + eps            (centered: v - a**2 + eps)
    inc   = lr * g / sqrt(denom)                     # eps INSIDE the root
    mom   = momentum * mom + inc;  w -= mom          # momentum > 0
    w    -= inc                                      # momentum == 0

  torch.optim.RMSprop instead divides by sqrt(v) + eps, and keeps lr outside its momentum
  buffer. (tf.keras 2 too put eps inside the root: TF's ApplyRMSProp op documents
  mom = momentum * mom + lr * g / sqrt(ms + eps).)

Adam (`update_step`, t = iterations + 1)::

    alpha = lr * sqrt(1 - beta2**t) / (1 - beta1**t)
    m    += (g - m) * (1 - beta1)
    v    += (g**2 - v) * (1 - beta2)
    w    -= alpha * m / (sqrt(v) + eps)              # eps on the UN-corrected sqrt(v)

  torch.optim.Adam adds eps after bias-correcting v: lr * m_hat / (sqrt(v_hat) + eps), so
  Keras' eps acts as a torch eps of eps / sqrt(1 - beta2**t): 32x larger at t=1 (beta2
  0.999), 3.2x at t=100, 1.26x at t=1000 (study 004 ran 625 steps an epoch).

Keras applies weight decay decoupled (w -= w * wd * lr) where torch's Adam and RMSprop add it to
the gradient; rather than pick one silently, these classes take only weight_decay=0, which is
what study 004 used (Keras' default, None).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from cnnlab.errors import CnnlabError

Params = Iterable[torch.nn.Parameter] | Iterable[dict[str, Any]]
Closure = Callable[[], torch.Tensor] | None


def _check(name: str, weight_decay: float, eps: float) -> None:
    """Refuse what Keras' rule does not define the way torch's signature suggests."""
    if weight_decay != 0:
        torch_name = name.removeprefix("Keras")
        raise CnnlabError(f"{name}: weight_decay must be 0 with preset keras (Keras decays "
                          f"weights decoupled, torch's {torch_name} through the gradient), "
                          f"got {weight_decay}")
    if not eps > 0:
        raise CnnlabError(f"{name}: eps must be > 0, got {eps}")


def _buffer(state: dict[str, Any], key: str, p: torch.Tensor) -> torch.Tensor:
    """The zero-initialised buffer `key` of a parameter's state, created on first use (only then:
    `setdefault` would allocate a throwaway tensor every step)."""
    if key not in state:
        state[key] = torch.zeros_like(p)  # keeps p's device, dtype and memory format
    return state[key]


def _grads(group: dict[str, Any]) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """(parameter, gradient) for each parameter of `group` that has a gradient this step."""
    for p in group["params"]:
        if p.grad is None:
            continue  # torch's convention: a parameter without a gradient keeps its state
        if p.grad.is_sparse:
            raise CnnlabError("Keras optimizers here take dense gradients only")
        yield p, p.grad


class KerasRMSprop(torch.optim.Optimizer):
    """Keras 3's RMSprop: lr * g / sqrt(v + eps), with lr inside the momentum buffer.

    Exists so study 004's `rmsprop` (Keras defaults: lr 1e-3, rho 0.9, eps 1e-7) trains with
    the rule it used; torch.optim.RMSprop's sqrt(v) + eps has no switch. Hyperparameters keep
    torch's names (alpha is Keras' rho) so the preset table fills both classes alike.
    """

    def __init__(self, params: Params, lr: float = 1e-3, alpha: float = 0.9, eps: float = 1e-7,
                 weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False
                 ) -> None:
        _check("KerasRMSprop", weight_decay, eps)
        if not 0.0 <= alpha < 1.0 or momentum < 0.0 or lr < 0.0:
            raise CnnlabError(f"KerasRMSprop: needs lr >= 0, 0 <= alpha < 1 and momentum >= 0, "
                              f"got lr={lr}, alpha={alpha}, momentum={momentum}")
        defaults = {"lr": lr, "alpha": alpha, "eps": eps, "weight_decay": weight_decay,
                    "momentum": momentum, "centered": centered}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Closure = None) -> torch.Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, rho, eps = group["lr"], group["alpha"], group["eps"]
            momentum = group["momentum"]
            for p, g in _grads(group):
                state = self.state[p]
                v = _buffer(state, "square_avg", p)
                v.mul_(rho).addcmul_(g, g, value=1 - rho)
                if group["centered"]:
                    a = _buffer(state, "grad_avg", p)
                    a.mul_(rho).add_(g, alpha=1 - rho)
                    denom = v - a * a + eps
                else:
                    denom = v + eps
                increment = g * lr / denom.sqrt()
                # Created when first needed, as a scheduler (OneCycleLR) may raise momentum
                # from 0 mid-run. Keras' buffer holds lr-scaled increments, unlike torch's.
                if momentum > 0:
                    buf = _buffer(state, "momentum", p)
                    buf.mul_(momentum).add_(increment)
                    p.sub_(buf)
                else:
                    p.sub_(increment)
        return loss


class KerasAdam(torch.optim.Optimizer):
    """Keras 3's Adam: alpha * m / (sqrt(v) + eps), alpha = lr * sqrt(1 - b2^t) / (1 - b1^t).

    Exists so study 004's `adam` (Keras defaults: lr 1e-3, betas (0.9, 0.999), eps 1e-7)
    trains with the rule it used: Keras adds eps to the un-corrected sqrt(v), torch.optim.Adam
    to the bias-corrected one, and torch has no switch for it. t counts this parameter's steps
    (torch's convention); Keras' counter is the optimizer's, the same when every parameter
    gets a gradient each step, as in study 004's training.
    """

    def __init__(self, params: Params, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-7,
                 weight_decay: float = 0.0) -> None:
        _check("KerasAdam", weight_decay, eps)
        if lr < 0.0 or not all(0.0 <= b < 1.0 for b in betas):
            raise CnnlabError(f"KerasAdam: needs lr >= 0 and betas in [0, 1), got lr={lr}, "
                              f"betas={tuple(betas)}")
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Closure = None) -> torch.Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            (beta1, beta2), eps = group["betas"], group["eps"]
            for p, g in _grads(group):
                state = self.state[p]
                # A plain int step: the bias correction needs no device sync, and
                # load_state_dict leaves non-tensors as they are.
                t = state["step"] = state.get("step", 0) + 1
                alpha = group["lr"] * math.sqrt(1 - beta2 ** t) / (1 - beta1 ** t)
                m, v = _buffer(state, "exp_avg", p), _buffer(state, "exp_avg_sq", p)
                m.lerp_(g, 1 - beta1)  # m += (g - m) * (1 - beta1), Keras' form
                v.lerp_(g * g, 1 - beta2)
                p.addcdiv_(m, v.sqrt().add_(eps), value=-alpha)
        return loss
