"""The fast path's switches: what `speed:` resolves to per device, and that the loop trains with
each of them. bf16 autocast and channels_last are the defaults on the CPU too where it has bf16
arithmetic, so their code path is tested here; benchmarks/train_speed.py measures what they gain."""

import dataclasses
import os

import numpy as np
import pytest
import torch
from test_training import experiment, separable_dataset

from cnnlab import fastpath
from cnnlab.config import Speed, parse_params
from cnnlab.data.loader import DeviceSplit
from cnnlab.evaluate.scoring import predict
from cnnlab.fastpath import fused_kwargs, resolve_fastpath
from cnnlab.schema import ParamsError
from cnnlab.train.loop import train
from cnnlab.train.optimizers import build_optimizer

CPU = torch.device("cpu")


def test_auto_turns_on_what_the_device_computes_natively(monkeypatch):
    monkeypatch.setattr(fastpath, "cpu_has_native_bf16", lambda: True)
    cpu = resolve_fastpath(Speed(), "cpu")
    assert (cpu.autocast, cpu.channels_last, cpu.fused_optimizer) == (torch.bfloat16, True, False)
    assert cpu.describe() == "bf16 autocast, channels_last"
    monkeypatch.setattr(fastpath, "cpu_has_native_bf16", lambda: False)  # bf16 emulated: slower
    cpu = resolve_fastpath(Speed(), "cpu")
    assert (cpu.autocast, cpu.channels_last, cpu.fused_optimizer) == (None, True, False)
    assert cpu.describe() == "fp32, channels_last"
    cuda = resolve_fastpath(Speed(), "cuda")
    assert (cuda.autocast, cuda.channels_last, cuda.fused_optimizer) == (torch.bfloat16, True, True)
    assert cuda.describe() == "bf16 autocast, channels_last, fused optimizer"
    mps = resolve_fastpath(Speed(), "mps")
    assert (mps.autocast, mps.channels_last, mps.fused_optimizer) == (None, False, False)


def test_the_bf16_probe_matches_the_cpu_flags():
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else None
    if flags is None:
        pytest.skip("no /proc/cpuinfo to check the probe against")
    words = set(flags.split())
    assert fastpath.cpu_has_native_bf16() == bool(words & {"avx512_bf16", "amx_bf16"})


def test_explicit_settings_win_over_auto():
    off = resolve_fastpath(Speed(precision="fp32", channels_last=False, fused_optimizer=False),
                           "cuda")
    assert (off.autocast, off.channels_last, off.fused_optimizer) == (None, False, False)
    on = resolve_fastpath(Speed(precision="bf16", channels_last=True, compile=True,
                                deterministic=True), "cpu")
    assert on.autocast is torch.bfloat16 and on.channels_last and on.compile and on.deterministic


def test_fused_kernels_only_where_torch_has_them_and_only_on_cuda():
    cuda, cpu = resolve_fastpath(Speed(), "cuda"), resolve_fastpath(Speed(fused_optimizer=True),
                                                                    "cpu")
    for cls in (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD):
        assert fused_kwargs(cls, cuda) == {"fused": True}
        assert fused_kwargs(cls, cpu) == {}  # the fused kernels take CUDA tensors only
    assert fused_kwargs(torch.optim.RMSprop, cuda) == {}  # torch has no fused RMSprop
    exp = experiment()
    params = [torch.nn.Parameter(torch.zeros(3))]
    assert build_optimizer(params, exp.optimizer, cpu).defaults.get("fused") in (None, False)


@pytest.mark.parametrize("native_bf16", [True, False])
def test_the_default_cpu_run_is_the_run_auto_resolves_to(monkeypatch, native_bf16):
    monkeypatch.setattr(fastpath, "cpu_has_native_bf16", lambda: native_bf16)
    data = separable_dataset()
    explicit = Speed(precision="bf16" if native_bf16 else "fp32", channels_last=True)
    chosen = train(experiment(speed=explicit), data, CPU, progress=False).model.state_dict()
    auto = train(experiment(), data, CPU, progress=False).model.state_dict()
    assert all(torch.equal(chosen[k], auto[k]) for k in chosen)


def test_a_cpu_run_is_bit_identical_from_run_to_run_in_every_precision():
    data = separable_dataset()
    for speed in (Speed(precision="fp32", channels_last=False), Speed(precision="bf16")):
        first, again = (train(experiment(speed=speed), data, CPU, progress=False)
                        .model.state_dict() for _ in range(2))  # with random flips and crops
        assert all(torch.equal(first[k], again[k]) for k in first)


def test_bf16_autocast_and_channels_last_train_and_score():
    exp = experiment(speed=Speed(precision="bf16", channels_last=True))
    data = separable_dataset()
    result = train(exp, data, CPU, progress=False)
    assert result.history[-1]["train_accuracy"] > 0.9
    conv = next(m for m in result.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert all(p.dtype == torch.float32 for p in result.model.parameters())  # autocast, not .half()
    preds = predict(result.model, DeviceSplit(data.split("test"), CPU), exp)
    assert preds.probs.dtype.name == "float32"
    assert preds.accuracy > 0.9


def test_compiled_model_trains_like_the_eager_one():
    """torch.compile (inductor, on the CPU) against the same run eager, in float32: the same
    loss trajectory step by step and the same weights after it, within float tolerance. The
    smaller last batch of each epoch (72 = 2 x 32 + 8) runs through its own graph too."""
    pytest.importorskip("torch._inductor")

    class Losses:
        def __init__(self):
            self.steps = []

        def log_step(self, step, loss, lr):
            self.steps.append(loss)

        def log_epoch(self, epoch, step, metrics):
            pass

    runs = {}
    for compile_ in (False, True):
        exp = dataclasses.replace(experiment(epochs=2, log_every=1),
                                  speed=Speed(precision="fp32", compile=compile_))
        log = Losses()
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        result = train(exp, separable_dataset(n=72), CPU, log, progress=False)
        runs[compile_] = (log.steps, result.model.state_dict())
        # The compiled run really ran graphs that dynamo captured (not eager by a fallback).
        assert (torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0) == compile_
    (eager_losses, eager), (compiled_losses, compiled_) = runs[False], runs[True]
    assert len(compiled_losses) == len(eager_losses) == 6
    np.testing.assert_allclose(compiled_losses, eager_losses, rtol=1e-4, atol=1e-5)
    for key, value in eager.items():
        torch.testing.assert_close(compiled_[key], value, rtol=1e-3, atol=1e-4)


def test_speed_params_are_checked_at_load():
    import yaml

    from cnnlab.config import PARAMS_FILE

    raw = yaml.safe_load(open(PARAMS_FILE))
    raw["experiments"]["cnn"]["speed"] = {"precision": "fp16"}
    with pytest.raises(ParamsError, match=r"experiments\.cnn\.speed\.precision: 'fp16' is not "
                                          r"valid \(choose from: auto, fp32, bf16\)"):
        parse_params(raw)
    raw["experiments"]["cnn"]["speed"] = {"channels_last": "yes"}
    with pytest.raises(ParamsError, match=r"experiments\.cnn\.speed\.channels_last"):
        parse_params(raw)


def test_cuda_backend_switches_last_for_one_run_only():
    """Set and put back without a GPU: the switches are plain process-wide flags."""
    cudnn = torch.backends.cudnn
    before = (cudnn.benchmark, cudnn.deterministic, torch.are_deterministic_algorithms_enabled())
    run = resolve_fastpath(Speed(deterministic=True), "cuda")
    with fastpath.backends(run):
        assert cudnn.deterministic and not cudnn.benchmark
        assert torch.are_deterministic_algorithms_enabled()
    with fastpath.backends(resolve_fastpath(Speed(), "cuda")):
        assert cudnn.benchmark and not torch.are_deterministic_algorithms_enabled()
    assert (cudnn.benchmark, cudnn.deterministic,
            torch.are_deterministic_algorithms_enabled()) == before
