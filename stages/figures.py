"""DVC stage figures@<exp>: every figure of one experiment into metrics/<exp>/figures/."""

import argparse

from cnnlab.cli import run_stage
from cnnlab.config import load_params
from cnnlab.report.figure_sets import draw_experiment_figures


def main(experiment: str) -> None:
    written = draw_experiment_figures(load_params(), experiment)
    print(f"{experiment}: {len(written)} figures in {written[0].parent}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("experiment", help="a key of `experiments:` in params.yaml")
    args = parser.parse_args()
    run_stage(lambda: main(args.experiment))
