"""Where each stage reads and writes, relative to the project root; dvc.yaml names the same."""

from pathlib import Path

DATA = Path("data")
METRICS = Path("metrics")


def raw_archive(dataset: str) -> Path:
    # A fixed name whatever the source: prepare detects the archive format from its content.
    return DATA / "raw" / f"{dataset}.archive"


def prepared_dir(dataset: str) -> Path:
    return DATA / "prepared" / dataset


def model_checkpoint(experiment: str) -> Path:
    return DATA / "models" / f"{experiment}.pt"


def train_log_dir(experiment: str) -> Path:
    return METRICS / experiment / "train"


def metrics_file(experiment: str) -> Path:
    return METRICS / f"{experiment}.json"


def eval_dir(experiment: str) -> Path:
    return METRICS / experiment / "eval"
