"""DVC stage train@<exp>: train one experiment from params.yaml. Started by
`torchrun --nproc_per_node N stages/train.py <exp>`, it trains data-parallel on N ranks."""

import argparse

from cnnlab.cli import run_stage
from cnnlab.config import load_params
from cnnlab.train.stage import train_experiment

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("experiment", help="a key of `experiments:` in params.yaml")
    args = parser.parse_args()
    run_stage(lambda: train_experiment(load_params(), args.experiment))
