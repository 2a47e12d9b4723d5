"""Out of memory becomes one line naming the batch size, the device and what to set instead.

tests/test_bad_inputs.py (case out-of-memory) runs the real train stage into the CPU allocator's
failure; these check the translation for the other devices' errors and the scoring pass."""

import pytest
import torch
from test_training import experiment, separable_dataset

from cnnlab.data.loader import DeviceSplit
from cnnlab.errors import CnnlabError
from cnnlab.evaluate.scoring import predict
from cnnlab.out_of_memory import is_out_of_memory, smaller_batch, training_memory

CPU = torch.device("cpu")


@pytest.mark.parametrize("error", [
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't "
                 "allocate memory: you tried to allocate 3221225472 bytes."),
    RuntimeError("MPS backend out of memory (MPS allocated: 1.2 GB)"),
    MemoryError("Unable to allocate 3.00 GiB for an array"),
])
def test_each_devices_out_of_memory_error_is_recognised(error):
    assert is_out_of_memory(error)


def test_other_errors_are_not_out_of_memory():
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not is_out_of_memory(ValueError("out of memory"))


def test_the_suggested_batch_is_the_largest_power_of_two_below():
    assert [smaller_batch(b) for b in (1, 2, 3, 64, 100, 1000, 1024)] == [1, 1, 2, 32, 64, 512,
                                                                          512]


def test_training_oom_names_batch_device_and_override():
    @training_memory
    def train(exp, dataset, device, logger=None, progress=True, name="train"):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(CnnlabError) as info:
        train(experiment(batch_size=256), None, torch.device("cuda"), name="cnn")
    assert str(info.value) == ("out of memory at batch size 256 on cuda while training; try a "
                               "smaller batch, e.g. -S experiments.cnn.batch_size=128")
    with pytest.raises(CnnlabError, match="at batch size 1 on cpu while training: even one image "
                                          "does not fit"):
        train(experiment(batch_size=1), None, CPU, name="cnn")


def test_other_errors_pass_through_unchanged():
    @training_memory
    def train(exp, dataset, device, name="train"):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        train(experiment(), None, CPU)


def test_scoring_oom_names_the_scoring_batch():
    class Exhausted(torch.nn.Module):
        def forward(self, x):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")

    data = DeviceSplit(separable_dataset(n=8).split("test"), CPU)
    with pytest.raises(CnnlabError, match=r"^out of memory at batch size 4 on cpu while scoring; "
                                          r"free memory on the device or run on one with more$"):
        predict(Exhausted(), data, experiment(), batch_size=4)
