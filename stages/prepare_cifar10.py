"""DVC stage: turn the raw CIFAR-10 archive (binary or ImageFolder) into prepared arrays."""

from cnnlab.cli import run_stage
from cnnlab.data.cifar10 import prepare_raw_cifar10

if __name__ == "__main__":
    run_stage(prepare_raw_cifar10)
