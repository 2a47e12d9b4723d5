"""Batched per-sample AutoAugment (CIFAR10 policy) matches torchvision's per-image AutoAugment."""

import itertools
import os

import pytest
import torch
import torch.nn.functional as F
from torchvision.transforms import AutoAugment, AutoAugmentPolicy, InterpolationMode
from torchvision.transforms.autoaugment import _apply_op

import cnnlab.data.autoaugment as aa
from cnnlab.data.autoaugment import apply_subpolicies, autoaugment_cifar10

TV = AutoAugment(AutoAugmentPolicy.CIFAR10)
N_POLICIES = len(TV.policies)  # 25

# Tolerance against torchvision: max abs difference <= 1 grey level. The colour ops end in a
# truncating float32 -> uint8 cast, so a product one ulp apart (another kernel or backend, e.g.
# FMA on a GPU) can move a pixel by one level. On the CPU we get exact equality; the bound on the
# share of differing pixels keeps a systematic off-by-one (round vs truncate) from hiding in it.
TOL = 1
MAX_DIFFERING_SHARE = 1e-3


def reference(img, k, apply, signs):
    """torchvision's AutoAugment.forward for one image with the draws given: sub-policy k, whether
    op 1 / op 2 fires and their signs (forward negates a signed magnitude when its sign is 0)."""
    space = TV._augmentation_space(10, tuple(img.shape[-2:]))
    for i, (op, _, mag_id) in enumerate(TV.policies[k]):
        if apply[i]:
            mags, signed = space[op]
            magnitude = float(mags[mag_id].item()) if mag_id is not None else 0.0
            if signed and signs[i] < 0:
                magnitude *= -1.0
            img = _apply_op(img, op, magnitude, interpolation=InterpolationMode.NEAREST, fill=None)
    return img


def assert_matches_torchvision(out, x, policy, apply, signs):
    ref = torch.stack([reference(x[i], int(policy[i]), apply[i], signs[i])
                       for i in range(len(x))])
    diff = (out.int() - ref.int()).abs()
    worst = diff.flatten(1).amax(1)
    bad = [(TV.policies[int(policy[i])], apply[i].tolist(), signs[i].tolist(), int(worst[i]))
           for i in torch.nonzero(worst > TOL).flatten()[:5]]
    assert not bad, f"differs from torchvision by more than {TOL}: {bad}"
    assert (diff > 0).float().mean() <= MAX_DIFFERING_SHARE


@pytest.fixture(scope="module")
def images(request):
    """Six 32x32 images: real CIFAR-10 test images when CNNLAB_DATASETS is set, otherwise smooth
    random textures (upsampled noise); plus a constant image (AutoContrast's flat-channel case,
    Equalize's step == 0 case) and a two-level image."""
    if os.environ.get("CNNLAB_DATASETS"):
        split = request.getfixturevalue("real_cifar10").split("test")
        base = torch.from_numpy(split.images[:4]).permute(0, 3, 1, 2).contiguous()
    else:
        g = torch.Generator().manual_seed(0)
        noise = torch.rand(4, 3, 6, 6, generator=g)
        smooth = F.interpolate(noise, size=32, mode="bicubic", align_corners=False)
        base = (smooth * 255).clamp(0, 255).round().to(torch.uint8)
    constant = torch.full((1, 3, 32, 32), 77, dtype=torch.uint8)
    two_level = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
    two_level[..., 16:] = 200
    return torch.cat([base, constant, two_level])


def all_cases(x, coins, signs):
    """Every sub-policy x coin combination x sign combination, each on every image of x."""
    cases = list(itertools.product(range(N_POLICIES), coins, signs))
    n = len(x)
    policy = torch.tensor([c[0] for c in cases]).repeat_interleave(n)
    apply = torch.tensor([c[1] for c in cases], dtype=torch.bool).repeat_interleave(n, 0)
    sign = torch.tensor([c[2] for c in cases], dtype=torch.float32).repeat_interleave(n, 0)
    return x.repeat(len(cases), 1, 1, 1), policy, apply, sign


def test_every_subpolicy_coin_and_sign_matches_torchvision_per_image(images):
    x, policy, apply, signs = all_cases(images, coins=[(1, 1), (1, 0), (0, 1)],
                                        signs=[(1, 1), (-1, -1)])
    out = apply_subpolicies(x, policy, apply, signs)
    assert_matches_torchvision(out, x, policy, apply, signs)
    # The no-gather path (what a GPU runs: whole-batch ops + torch.where) gives the same result.
    assert torch.equal(aa._apply_subpolicies(x, policy, apply, signs, gather=False), out)


def test_non_square_images_match_torchvision():
    # Translate magnitudes and the shear centre depend on (H, W): a non-square size catches a swap.
    x = torch.randint(0, 256, (2, 3, 20, 36), dtype=torch.uint8,
                      generator=torch.Generator().manual_seed(3))
    x, policy, apply, signs = all_cases(x, coins=[(1, 1)], signs=[(1, -1), (-1, 1)])
    assert_matches_torchvision(apply_subpolicies(x, policy, apply, signs), x, policy, apply, signs)


def test_draws_follow_torchvision_forward(images):
    # torchvision's forward draws (policy, probs, signs) with get_params from the global RNG:
    # replay those draws through apply_subpolicies and compare with the real forward.
    x = images.repeat(25, 1, 1, 1)
    policy, apply, signs, ref = [], [], [], []
    for i, img in enumerate(x):
        torch.manual_seed(i)
        k, probs, sign = TV.get_params(N_POLICIES)
        policy.append(k)
        apply.append([bool(probs[j] <= TV.policies[k][j][1]) for j in (0, 1)])
        signs.append([1.0 if s else -1.0 for s in sign.tolist()])
        torch.manual_seed(i)
        ref.append(TV(img))
    out = apply_subpolicies(x, torch.tensor(policy), torch.tensor(apply), torch.tensor(signs))
    diff = (out.int() - torch.stack(ref).int()).abs()
    assert int(diff.max()) <= TOL and (diff > 0).float().mean() <= MAX_DIFFERING_SHARE


def capture_draws(monkeypatch, b, seed, size=4):
    """Run autoaugment_cifar10 on b tiny images and return the draws it hands to the core."""
    seen = {}

    def record(x, policy, apply, signs):
        seen.update(policy=policy, apply=apply, signs=signs)
        return x

    monkeypatch.setattr(aa, "apply_subpolicies", record)
    x = torch.zeros(b, 3, size, size, dtype=torch.uint8)
    autoaugment_cifar10(x, torch.Generator().manual_seed(seed))
    return seen["policy"], seen["apply"], seen["signs"]


def test_each_image_of_a_batch_draws_its_own_subpolicy(images, monkeypatch):
    x = images[:1].repeat(256, 1, 1, 1)
    out = autoaugment_cifar10(x, torch.Generator().manual_seed(0))
    assert len(torch.unique(out.flatten(1), dim=0)) >= 30  # identical inputs, many outputs
    assert not torch.equal(out, x)
    policy, _, _ = capture_draws(monkeypatch, 256, seed=0)
    assert torch.unique(policy).numel() == N_POLICIES


def test_same_seed_same_output_other_seed_other_output(images):
    x = images.repeat(8, 1, 1, 1)
    first = autoaugment_cifar10(x, torch.Generator().manual_seed(7))
    assert torch.equal(first, autoaugment_cifar10(x, torch.Generator().manual_seed(7)))
    assert not torch.equal(first, autoaugment_cifar10(x, torch.Generator().manual_seed(8)))


def test_dtype_shape_device_preserved_and_coins_off_is_identity(images):
    out = autoaugment_cifar10(images, torch.Generator().manual_seed(0))
    assert out.dtype == torch.uint8 and out.shape == images.shape
    assert out.device == images.device
    x, policy, apply, signs = all_cases(images[:2], coins=[(0, 0)], signs=[(1, -1)])
    assert torch.equal(apply_subpolicies(x, policy, apply, signs), x)
    with pytest.raises(ValueError, match="uint8"):
        autoaugment_cifar10(images.float(), torch.Generator())


def test_subpolicy_coin_and_sign_frequencies(monkeypatch):
    n = 50_000
    policy, apply, signs = capture_draws(monkeypatch, n, seed=1)
    # Bounds at 5 standard deviations of a binomial count: a fixed seed, and no flakiness.
    counts = torch.bincount(policy, minlength=N_POLICIES).double()
    p = 1 / N_POLICIES
    assert ((counts - n * p).abs() <= 5 * (n * p * (1 - p)) ** 0.5).all(), counts
    for k, sub in enumerate(TV.policies):
        chosen = apply[policy == k]
        for slot, (_, prob, _) in enumerate(sub):
            m = len(chosen)
            fired = int(chosen[:, slot].sum())
            assert abs(fired - m * prob) <= 5 * (m * prob * (1 - prob)) ** 0.5 + 1e-9, (k, slot)
    assert set(signs.unique().tolist()) == {-1.0, 1.0}
    assert abs(float((signs > 0).double().mean()) - 0.5) < 0.01


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(images):
    x, policy, apply, signs = all_cases(images, coins=[(1, 1), (1, 0), (0, 1)],
                                        signs=[(1, 1), (-1, -1)])
    cpu = apply_subpolicies(x, policy, apply, signs)
    gpu = apply_subpolicies(x.cuda(), policy.cuda(), apply.cuda(), signs.cuda())
    diff = (gpu.cpu().int() - cpu.int()).abs()
    assert int(diff.max()) <= TOL and (diff > 0).float().mean() <= MAX_DIFFERING_SHARE
    out = autoaugment_cifar10(x.cuda(), torch.Generator(device="cuda").manual_seed(0))
    assert out.device.type == "cuda" and out.dtype == torch.uint8 and out.shape == x.shape
