"""The device loader: whole batches by indexing, shuffled by the seed, covering every image once."""

import numpy as np
import torch

from cnnlab.data.loader import DeviceSplit, seeded_subset
from cnnlab.data.prepared import Split


def make_split(n=10):
    images = np.arange(n * 4 * 4 * 3, dtype=np.int64).reshape(n, 4, 4, 3) % 256
    return Split(images.astype(np.uint8), np.arange(n, dtype=np.int64))


def test_device_split_is_nchw_uint8_and_keeps_pixels():
    split = make_split()
    data = DeviceSplit(split, torch.device("cpu"))
    assert data.images.shape == (10, 3, 4, 4) and data.images.dtype == torch.uint8
    assert data.images[3, 2, 1, 0] == int(split.images[3, 1, 0, 2])


def test_shuffled_epoch_covers_every_image_once_and_depends_on_seed():
    data = DeviceSplit(make_split(10), torch.device("cpu"))
    def epoch(seed):
        batches = list(data.batches(4, torch.Generator().manual_seed(seed)))
        assert [len(y) for _, y in batches] == [4, 4, 2]  # the last batch is short, not dropped
        return torch.cat([y for _, y in batches]).tolist()
    assert sorted(epoch(0)) == list(range(10))
    assert epoch(0) == epoch(0) and epoch(0) != epoch(1)


def test_unshuffled_batches_keep_order():
    data = DeviceSplit(make_split(5), torch.device("cpu"))
    assert torch.cat([y for _, y in data.batches(2)]).tolist() == [0, 1, 2, 3, 4]
    assert data.num_batches(2) == 3


def test_seeded_subset_is_deterministic_distinct_and_sized():
    a = seeded_subset(1000, 100, seed=3)
    assert len(np.unique(a)) == 100 and np.array_equal(a, seeded_subset(1000, 100, seed=3))
    assert not np.array_equal(a, seeded_subset(1000, 100, seed=4))
    assert seeded_subset(1000, None, 0) is None and seeded_subset(10, 50, 0) is None


def test_subset_selects_matching_images_and_labels():
    split = make_split(10)
    data = DeviceSplit(split, torch.device("cpu"), np.array([2, 7]))
    assert data.labels.tolist() == [2, 7]
    assert torch.equal(data.images[1].permute(1, 2, 0), torch.from_numpy(split.images[7]))
