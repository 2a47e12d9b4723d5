"""AutoAugment (torchvision's CIFAR10 policy), batched and per sample, on uint8 (B, C, H, W).

Each image draws its own sub-policy, its own two coins and its own signs, exactly as
torchvision.transforms.AutoAugment(AutoAugmentPolicy.CIFAR10) does per image, but the batch goes
through a few tensor ops per op kind with per-sample parameters instead of a Python call per image.
Off the CPU every op runs on the whole batch and torch.where keeps it for the images that apply
it, so nothing reads a data-dependent value back to the host; on the CPU each op runs only on
the images that apply it (see _apply_subpolicies).

The op arithmetic mirrors torchvision.transforms.functional on tensors (same float32 formulas, same
casts), so results match torchvision's per-image output (tests/test_autoaugment.py checks it).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import NamedTuple

import torch
import torch.nn.functional as F

# torchvision is imported where the tables are built, not here: importing it pulls in
# torch._dynamo (about 1.5 s), which every stage would pay through the augmentation module
# whether or not its experiment uses AutoAugment.

# Ops that torchvision applies through F.affine / F.rotate: one affine kind, per-sample matrices.
_AFFINE_OPS = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")
_KINDS = ("Affine", "Brightness", "Color", "Contrast", "Sharpness", "Posterize", "Solarize",
          "AutoContrast", "Equalize", "Invert")


class _Tables(NamedTuple):
    kind: torch.Tensor  # (P, 2) int64: index into _KINDS of each sub-policy's op 1 / op 2
    prob: torch.Tensor  # (P, 2) float32: the probability of each op
    params: torch.Tensor  # (P, 2, 2, 6) float32: [sub-policy, slot, sign (0: -, 1: +)] -> params
    slot_kinds: tuple[tuple[int, ...], tuple[int, ...]]  # kinds that occur in slot 1 / slot 2


def _op_params(op: str, magnitude: float, h: int, w: int) -> list[float]:
    """The numbers torchvision's _apply_op hands to its tensor kernels, computed the same way."""
    import torchvision.transforms.functional as TF

    if op in ("ShearX", "ShearY"):  # F.affine(center=[0, 0]): centre is pixel (0, 0)
        deg = math.degrees(math.atan(magnitude))
        shear = [deg, 0.0] if op == "ShearX" else [0.0, deg]
        return TF._get_inverse_affine_matrix([-w * 0.5, -h * 0.5], 0.0, [0.0, 0.0], 1.0, shear)
    if op in ("TranslateX", "TranslateY"):  # int() truncates toward zero, as torchvision does
        t = [float(int(magnitude)), 0.0] if op == "TranslateX" else [0.0, float(int(magnitude))]
        return TF._get_inverse_affine_matrix([0.0, 0.0], 0.0, t, 1.0, [0.0, 0.0])
    if op == "Rotate":  # F.rotate passes -angle to the affine-matrix helper
        return TF._get_inverse_affine_matrix([0.0, 0.0], -magnitude, [0.0, 0.0], 1.0, [0.0, 0.0])
    if op in ("Brightness", "Color", "Contrast", "Sharpness"):
        # _blend computes ratio and 1 - ratio in double and uses both as float32 scalars.
        ratio = 1.0 + magnitude
        return [ratio, 1.0 - ratio]
    if op == "Posterize":
        return [float(-int(2 ** (8 - int(magnitude))) & 0xFF)]  # F.posterize's bit mask
    if op == "Solarize":
        return [magnitude]
    if op in ("AutoContrast", "Equalize", "Invert"):
        return []
    raise ValueError(f"unsupported AutoAugment op {op!r}")


@lru_cache(maxsize=16)
def _tables(h: int, w: int, device: torch.device) -> _Tables:
    # The policy list and the magnitude bins come from torchvision itself (not re-typed here), so
    # they are torchvision's by construction and follow it if it ever changes them.
    from torchvision.transforms import AutoAugment, AutoAugmentPolicy

    aa = AutoAugment(AutoAugmentPolicy.CIFAR10)
    space = aa._augmentation_space(10, (h, w))  # num_bins=10, as AutoAugment.forward uses
    kind, prob, params = [], [], []
    for sub in aa.policies:
        kind.append([_KINDS.index("Affine" if op in _AFFINE_OPS else op) for op, _, _ in sub])
        prob.append([p for _, p, _ in sub])
        per_slot = []
        for op, _, mag_id in sub:
            mags, signed = space[op]
            magnitude = float(mags[mag_id].item()) if mag_id is not None else 0.0
            row = []
            for sign in (-1.0, 1.0):
                m = -magnitude if (signed and sign < 0) else magnitude
                vals = _op_params(op, m, h, w)
                row.append(vals + [0.0] * (6 - len(vals)))
            per_slot.append(row)
        params.append(per_slot)
    kind_t = torch.tensor(kind, dtype=torch.int64)
    slot_kinds = tuple(tuple(sorted(set(kind_t[:, s].tolist()))) for s in (0, 1))
    return _Tables(kind_t.to(device), torch.tensor(prob, dtype=torch.float32, device=device),
                   torch.tensor(params, dtype=torch.float32, device=device), slot_kinds)


@lru_cache(maxsize=16)
def _base_grid(h: int, w: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """torchvision's _gen_affine_grid base grid (pixel centres about the image centre) and the
    divisor that maps it to grid_sample's [-1, 1]; cached so no host->device copy per call."""
    d = 0.5
    base = torch.empty(1, h, w, 3, device=device)
    xs = torch.linspace(-w * 0.5 + d, w * 0.5 + d - 1, steps=w, device=device)
    ys = torch.linspace(-h * 0.5 + d, h * 0.5 + d - 1, steps=h, device=device)
    base[..., 0].copy_(xs)
    base[..., 1].copy_(ys[:, None])
    base[..., 2].fill_(1)
    return base.view(1, h * w, 3), torch.tensor([0.5 * w, 0.5 * h], device=device)


def _col(p: torch.Tensor, i: int) -> torch.Tensor:
    return p[:, i].view(-1, 1, 1, 1)


def _affine(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    # Same float32 steps as torchvision's _gen_affine_grid + _apply_grid_transform (fill=None:
    # zeros outside), with one matrix per image through one batched bmm and grid_sample.
    b, _, h, w = x.shape
    base, scale = _base_grid(h, w, x.device)
    theta = p.view(b, 2, 3).transpose(1, 2) / scale
    grid = base.expand(b, -1, -1).bmm(theta).view(b, h, w, 2)
    out = F.grid_sample(x.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return out.round().to(torch.uint8)


def _blend(x: torch.Tensor, degenerate: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    # torchvision's _blend: truncating cast after clamp, per-image ratio as a float32 factor.
    return (_col(p, 0) * x + _col(p, 1) * degenerate).clamp(0, 255).to(torch.uint8)


def _gray(x: torch.Tensor) -> torch.Tensor:  # rgb_to_grayscale: truncating cast to uint8
    r, g, b = x.unbind(dim=1)
    return (0.2989 * r + 0.587 * g + 0.114 * b).to(x.dtype).unsqueeze(1)


def _brightness(x, p):
    return _blend(x, torch.zeros_like(x), p)


def _color(x, p):
    return _blend(x, _gray(x), p)


def _contrast(x, p):
    # A mean of integer grey levels is exact in float32 (sum < 2**24): batching can't change it.
    return _blend(x, _gray(x).float().mean(dim=(1, 2, 3), keepdim=True), p)


def _sharpness(x, p):
    h, w = x.shape[-2:]
    if h <= 2 or w <= 2:  # torchvision returns such images unchanged
        return x
    # torchvision convolves with [[1,1,1],[1,5,1],[1,1,1]] / 13 and rounds. We take the same sum
    # with integer weights (exact; cheaper than a depthwise conv on CPU) and divide: a sum / 13 is
    # never within 1/26 of a .5 tie, so the rounded value equals torchvision's whatever the
    # float rounding inside its conv.
    v = x.to(torch.int16)  # 13 * 255 fits
    rows = v[..., :-2, :] + v[..., 1:-1, :] + v[..., 2:, :]
    s = rows[..., :-2] + rows[..., 1:-1] + rows[..., 2:] + 4 * v[..., 1:-1, 1:-1]
    blurred = (s.float() / 13.0).round().to(torch.uint8)
    degenerate = x.clone()
    degenerate[..., 1:-1, 1:-1] = blurred
    return _blend(x, degenerate, p)


def _posterize(x, p):
    return x & _col(p, 0).to(torch.uint8)


def _solarize(x, p):
    return torch.where(x >= _col(p, 0), 255 - x, x)


def _autocontrast(x, p):
    lo = x.amin(dim=(-2, -1), keepdim=True).float()
    scale = 255.0 / (x.amax(dim=(-2, -1), keepdim=True).float() - lo)
    flat = ~torch.isfinite(scale)  # a constant channel: torchvision leaves it as is
    lo, scale = torch.where(flat, 0.0, lo), torch.where(flat, 1.0, scale)
    return ((x - lo) * scale).clamp(0, 255).to(torch.uint8)


def _equalize(x, p):
    # torchvision's _scale_channel for all B*C channels at once: histograms by scatter_add
    # (bincount would sync on CUDA to size its output), then the same integer LUT arithmetic.
    b, c, h, w = x.shape
    flat = x.reshape(b * c, h * w).long()
    hist = torch.zeros(b * c, 256, dtype=torch.long, device=x.device)
    hist.scatter_add_(1, flat, torch.ones_like(flat))
    # Sum of all non-zero bins but the last one = pixels minus the count of the highest level.
    step = (h * w - hist.gather(1, flat.amax(1, keepdim=True))) // 255
    lut = (hist.cumsum(1) + step // 2) // step.clamp(min=1)
    lut = F.pad(lut, [1, 0])[:, :-1].clamp(0, 255)
    out = torch.where(step == 0, flat, lut.gather(1, flat))
    return out.to(torch.uint8).view(b, c, h, w)


def _invert(x, p):
    return 255 - x


_OPS = dict(zip(_KINDS, (_affine, _brightness, _color, _contrast, _sharpness, _posterize,
                         _solarize, _autocontrast, _equalize, _invert), strict=True))


def _check(x: torch.Tensor) -> None:
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected uint8 (B, 3, H, W) images, got {x.dtype} {tuple(x.shape)}")


def apply_subpolicies(x: torch.Tensor, policy: torch.Tensor, apply: torch.Tensor,
                      signs: torch.Tensor) -> torch.Tensor:
    """Deterministic core: policy (B,) int64 index into the 25 sub-policies; apply (B, 2) bool
    whether op 1 / op 2 of the image's sub-policy fires; signs (B, 2) float (+1/-1) for signed
    magnitudes. Returns uint8 (B,C,H,W)."""
    return _apply_subpolicies(x, policy, apply, signs, gather=x.device.type == "cpu")


def _apply_subpolicies(x: torch.Tensor, policy: torch.Tensor, apply: torch.Tensor,
                       signs: torch.Tensor, gather: bool) -> torch.Tensor:
    # gather=False runs each op on the whole batch and keeps it where the mask says: no
    # data-dependent shapes, so no host sync on a GPU. On the CPU there is nothing to sync with,
    # and running each op only on the images that apply it (gather=True) saves most of the work.
    # Every op acts on each image alone, so both give the same result (the tests check it).
    _check(x)
    b, _, h, w = x.shape
    tab = _tables(h, w, x.device)
    sign_idx = (signs > 0).long()
    for slot in (0, 1):  # op 1 then op 2, as torchvision applies them
        kind = tab.kind[policy, slot]
        params = tab.params[policy, slot, sign_idx[:, slot]]  # (B, 6)
        fires = apply[:, slot].bool()
        for k in tab.slot_kinds[slot]:
            op, mask = _OPS[_KINDS[k]], fires & (kind == k)
            if not gather:
                x = torch.where(mask.view(b, 1, 1, 1), op(x, params), x)
            elif (idx := mask.nonzero().squeeze(1)).numel():
                x = x.index_copy(0, idx, op(x[idx], params[idx]))
    return x


def autoaugment_cifar10(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """uint8 (B,C,H,W) -> uint8 (B,C,H,W); per-sample sub-policy, coins and signs drawn from gen
    (a torch.Generator on x.device)."""
    _check(x)
    b, _, h, w = x.shape
    tab = _tables(h, w, x.device)
    policy = torch.randint(len(tab.kind), (b,), generator=gen, device=x.device)
    # torchvision: op i fires when rand() <= p; a sign draw of 0 negates the magnitude.
    apply = torch.rand(b, 2, generator=gen, device=x.device) <= tab.prob[policy]
    signs = torch.randint(0, 2, (b, 2), generator=gen, device=x.device).float() * 2 - 1
    return apply_subpolicies(x, policy, apply, signs)
