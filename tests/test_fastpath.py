"""The fast path's switches: what `speed:` resolves to per device, and that the loop trains with
each of them. bf16 autocast and channels_last run on the CPU too, so their code path is tested
here; on a GPU they are the defaults (benchmarks/train_speed.py measures them there)."""

import dataclasses

import pytest
import torch
from test_training import experiment, separable_dataset

from cnnlab.config import Speed, parse_params
from cnnlab.data.loader import DeviceSplit
from cnnlab.evaluation import predict
from cnnlab.fastpath import fused_kwargs, resolve_fastpath
from cnnlab.optim import build_optimizer
from cnnlab.schema import ParamsError
from cnnlab.training import train

CPU = torch.device("cpu")


def test_auto_is_float32_on_the_cpu_and_everything_on_cuda():
    cpu = resolve_fastpath(Speed(), "cpu")
    assert (cpu.autocast, cpu.channels_last, cpu.fused_optimizer) == (None, False, False)
    assert cpu.describe() == "fp32"
    cuda = resolve_fastpath(Speed(), "cuda")
    assert (cuda.autocast, cuda.channels_last, cuda.fused_optimizer) == (torch.bfloat16, True, True)
    assert cuda.describe() == "bf16 autocast, channels_last, fused optimizer"


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


def test_the_default_cpu_run_is_the_plain_float32_run():
    data = separable_dataset()
    plain = train(experiment(speed=Speed(precision="fp32", channels_last=False)), data, CPU,
                  progress=False).model.state_dict()
    auto = train(experiment(), data, CPU, progress=False).model.state_dict()
    assert all(torch.equal(plain[k], auto[k]) for k in plain)


def test_bf16_autocast_and_channels_last_train_and_score():
    exp = experiment(speed=Speed(precision="bf16", channels_last=True))
    data = separable_dataset()
    result = train(exp, data, CPU, progress=False)
    assert result.history[-1]["train_accuracy"] > 0.9
    conv = next(m for m in result.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert all(p.dtype == torch.float32 for p in result.model.parameters())  # autocast, not .half()
    probs = predict(result.model, DeviceSplit(data.split("test"), CPU), exp)
    assert probs.dtype.name == "float32"
    assert (probs.argmax(1) == data.split("test").labels).mean() > 0.9


def test_compiled_model_trains_like_the_eager_one():
    pytest.importorskip("torch._inductor")
    exp = dataclasses.replace(experiment(epochs=1), speed=Speed(compile=True))
    result = train(exp, separable_dataset(n=64), CPU, progress=False)
    assert result.steps == 2 and all(torch.isfinite(p).all() for p in result.model.parameters())


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
