"""Batched augmentation matches torchvision's per-image ops and is driven by the seed."""

import dataclasses

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from cnnlab.config import Augment, Normalize
from cnnlab.data.augment import augment_batch, normalize, random_crop, random_hflip


def images(n=16, size=8):
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(1))


def test_hflip_flips_about_half_and_each_image_is_either_flipped_or_not():
    x = images(n=400)
    out = random_hflip(x, torch.Generator().manual_seed(0))
    flipped = (out == x.flip(3)).flatten(1).all(1)
    kept = (out == x).flatten(1).all(1)
    assert bool((flipped | kept).all())
    assert 150 < int(flipped.sum()) < 250


@pytest.mark.parametrize("size", [(8, 8), (6, 10)])
def test_crop_equals_torchvision_crop_at_the_drawn_offsets(size):
    # The offsets as random_crop documents its draws: one row offset per image, then one column
    # offset per image, uniform in 0..2*padding, from the generator it is given.
    h, w = size
    x = torch.randint(0, 256, (32, 3, h, w), dtype=torch.uint8,
                      generator=torch.Generator().manual_seed(1))
    out = random_crop(x, 4, torch.Generator().manual_seed(0))
    draws = torch.Generator().manual_seed(0)
    dy = torch.randint(0, 9, (32,), generator=draws)
    dx = torch.randint(0, 9, (32,), generator=draws)
    assert len(set(dy.tolist())) > 3 and len(set(dx.tolist())) > 3 and not torch.equal(dy, dx)
    # torchvision's RandomCrop(padding=4) is pad-then-crop at (top, left): compare image by image.
    padded = TF.pad(x, [4])
    for i in range(len(x)):
        expected = TF.crop(padded[i], int(dy[i]), int(dx[i]), h, w)
        assert torch.equal(out[i], expected), f"image {i}: not the window at {dy[i]}, {dx[i]}"


def test_crop_offsets_differ_across_the_batch():
    x = images(n=64)
    out = random_crop(x, 4, torch.Generator().manual_seed(0))
    same_as_centre = (out == x).flatten(1).all(1)
    assert int(same_as_centre.sum()) < 16


def test_same_seed_same_augmentation_different_seed_different():
    cfg = Augment(hflip=True, crop_padding=4)
    x = images(n=32)
    a = augment_batch(x, cfg, torch.Generator().manual_seed(5))
    b = augment_batch(x, cfg, torch.Generator().manual_seed(5))
    c = augment_batch(x, cfg, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_no_augmentation_is_identity():
    x = images()
    assert torch.equal(augment_batch(x, Augment(), torch.Generator()), x)


def test_normalize_matches_to_tensor_then_normalize():
    x = images()
    cfg = Normalize(mean=(0.5, 0.4, 0.3), std=(0.5, 0.2, 0.25))
    expected = TF.normalize(x.float() / 255, list(cfg.mean), list(cfg.std))
    torch.testing.assert_close(normalize(x, cfg), expected)
    assert normalize(x, Normalize(mean=(0.5,) * 3, std=(0.5,) * 3)).min() >= -1.0


@pytest.mark.parametrize("padding", [1, 4])
def test_crop_keeps_pixels_from_the_image_or_zero_padding(padding):
    x = torch.full((4, 3, 8, 8), 7, dtype=torch.uint8)
    out = random_crop(x, padding, torch.Generator().manual_seed(0))
    assert set(out.unique().tolist()) <= {0, 7}


@pytest.mark.parametrize("order", [("hflip", "crop", "autoaugment"),
                                   ("autoaugment", "hflip", "crop"),
                                   ("crop", "autoaugment", "hflip")])
def test_the_ops_run_in_the_order_asked(order):
    """augment_batch equals the ops called one after another in `order`, each drawing from the
    same generator in turn; the three orders give three different batches."""
    from cnnlab.data.autoaugment import autoaugment_cifar10

    x = images(n=8, size=32)
    cfg = Augment(hflip=True, crop_padding=4, autoaugment="cifar10", order=order)
    ops = {"hflip": random_hflip, "crop": lambda b, g: random_crop(b, 4, g),
           "autoaugment": autoaugment_cifar10}
    gen, expected = torch.Generator().manual_seed(5), x
    for op in order:
        expected = ops[op](expected, gen)
    got = augment_batch(x, cfg, torch.Generator().manual_seed(5))
    assert torch.equal(got, expected)
    other = tuple(reversed(order))
    assert not torch.equal(got, augment_batch(x, dataclasses.replace(cfg, order=other),
                                              torch.Generator().manual_seed(5)))
