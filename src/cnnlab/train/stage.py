"""The train@<exp> stage: train one experiment, save its weights and its training log."""

from __future__ import annotations

import hashlib

import torch

from cnnlab import paths
from cnnlab.atomic import atomic_dir
from cnnlab.config import Params
from cnnlab.data.prepared import load_prepared
from cnnlab.devices import hold_device
from cnnlab.errors import CnnlabError
from cnnlab.models.checkpoints import read_tensors
from cnnlab.train.distributed import torchrun_group
from cnnlab.train.loop import train
from cnnlab.train.resume import ResumeFile, fingerprint
from cnnlab.train.training_log import training_log


def train_experiment(params: Params, name: str) -> None:
    exp = params.experiment(name)
    init_state, init_digest = _init_from(exp.init_from)
    # Under torchrun each rank trains its shard of every batch; rank 0 alone writes the outputs.
    with torchrun_group(hold_device(exp.device)) as (parallel, device):
        dataset = load_prepared(paths.prepared_dir(exp.dataset))
        resume = ResumeFile(paths.resume_checkpoint(name),
                            fingerprint(exp, dataset.name, len(dataset.split("train")),
                                        parallel.world_size, init_digest))
        if not parallel.is_main:
            train(exp, dataset, device, progress=False, name=name, resume=resume,
                  parallel=parallel, init_state=init_state)
            return
        with training_log(paths.train_log_dir(name)) as (logger, summary):
            result = train(exp, dataset, device, logger, name=name, resume=resume,
                           parallel=parallel, init_state=init_state)
            with atomic_dir(paths.model_dir(name)) as out:
                torch.save(result.model.state_dict(), out / paths.model_checkpoint(name).name)
                if result.best_state is not None:
                    torch.save(result.best_state, out / paths.best_checkpoint(name).name)
            summary.update(result.history[-1])
            if result.best_epoch is not None:
                best = result.history[result.best_epoch - 1]
                summary.update(best_epoch=result.best_epoch,
                               **{f"best_{k}": v for k, v in best.items()
                                  if k.endswith("_accuracy")})
            summary.update(
                train_seconds=result.train_seconds,
                epochs=result.epochs,
                steps=result.steps,
                train_images=result.train_images,
                images_per_second=result.images_per_second,
                seconds_per_epoch=result.train_seconds / result.epochs,
                device=parallel.describe(device),
                speed=result.speed,
            )
        resume.clear()  # every output is in place: nothing left to resume
    print(f"{name}: trained {result.epochs} epochs in {result.train_seconds:.1f}s "
          f"({result.images_per_second:.0f} img/s) on {parallel.describe(device)}")


def _init_from(parent: str | None) -> tuple[dict[str, torch.Tensor] | None, str]:
    """The final weights of the experiment a chained one starts from (read as tensors only)
    and their file's hash; (None, "") for a run from the initialiser."""
    if parent is None:
        return None, ""
    checkpoint = paths.model_checkpoint(parent)
    if not checkpoint.is_file():
        raise CnnlabError(f"{checkpoint} not found: this experiment starts from {parent}'s "
                          f"trained model (run `dvc repro` on this stage, which trains it first)")
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    return read_tensors(checkpoint), digest
