"""What the original studies reported (EXPERIMENTS.md), kept beside our results for comparison.

Values are fractions; None where the study reported nothing for that figure.
"""

REPORTED: dict[str, dict[str, float | None]] = {
    "hw4net1": {"val_accuracy": 0.51, "train_accuracy": 0.98},
    "hw4net2": {"val_accuracy": 0.54, "train_accuracy": 0.99},
    "hw4net3": {"val_accuracy": 0.56, "train_accuracy": 0.58},
}
