"""DVC stage compare_<name>: one table and overlay figures for a group of experiments."""

import argparse

from cnnlab.cli import run_stage
from cnnlab.config import load_params
from cnnlab.report.comparisons import compare_experiments

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("name", help="the comparison's name: output goes to metrics/compare-NAME/")
    parser.add_argument("experiments", nargs="+", help="keys of `experiments:` in params.yaml")
    args = parser.parse_args()
    run_stage(lambda: compare_experiments(load_params(), args.name, args.experiments))
