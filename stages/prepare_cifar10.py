"""DVC stage: turn the raw CIFAR-10 archive (binary or ImageFolder) into prepared arrays."""

from cnnlab.cli import run_stage
from cnnlab.config import load_params
from cnnlab.pipeline import prepare_cifar10_stage

if __name__ == "__main__":
    run_stage(lambda: prepare_cifar10_stage(load_params()))
