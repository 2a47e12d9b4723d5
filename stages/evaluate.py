"""DVC stage evaluate@<exp>: score one trained experiment into metrics/<exp>.json and plots."""

import argparse

from cnnlab.cli import run_stage
from cnnlab.config import load_params
from cnnlab.evaluate.stage import evaluate_experiment

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("experiment", help="a key of `experiments:` in params.yaml")
    args = parser.parse_args()
    run_stage(lambda: evaluate_experiment(load_params(), args.experiment))
