"""DVC stage: fetch the CIFAR-10 archive named by data.cifar10 into data/raw/, md5-checked."""

from cnnlab.cli import run_stage
from cnnlab.config import load_params
from cnnlab.data.sources import download_cifar10

if __name__ == "__main__":
    run_stage(lambda: download_cifar10(load_params()))
