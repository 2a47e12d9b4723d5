"""Where each stage reads and writes, relative to the project root; dvc.yaml names the same."""

from pathlib import Path

DATA = Path("data")
METRICS = Path("metrics")


def raw_archive(dataset: str) -> Path:
    # A fixed name whatever the source: prepare detects the archive format from its content.
    return DATA / "raw" / f"{dataset}.archive"


def prepared_dir(dataset: str) -> Path:
    return DATA / "prepared" / dataset


def model_dir(experiment: str) -> Path:
    return DATA / "models" / experiment


def model_checkpoint(experiment: str) -> Path:
    """The weights after the last epoch."""
    return model_dir(experiment) / "final.pt"


def best_checkpoint(experiment: str) -> Path:
    """The weights of the epoch best on the eval split (experiments with keep_best only)."""
    return model_dir(experiment) / "best.pt"


def resume_checkpoint(experiment: str) -> Path:
    # Not a DVC output on purpose: DVC deletes a stage's outputs before re-running it, and this
    # file must survive a killed run so the next one resumes. Removed when training completes.
    return DATA / "resume" / f"{experiment}.pt"


def train_log_dir(experiment: str) -> Path:
    return METRICS / experiment / "train"


def train_summary(experiment: str) -> Path:
    """The training run's summary: epochs, steps and its timings (which differ run to run)."""
    return train_log_dir(experiment) / "metrics.json"


def metrics_file(experiment: str) -> Path:
    return METRICS / f"{experiment}.json"


def eval_dir(experiment: str) -> Path:
    return METRICS / experiment / "eval"


def coco_instances() -> Path:
    return DATA / "raw" / "coco_instances.json"


def coco_image_cache() -> Path:
    # Not a DVC output on purpose: it survives re-runs, so an interrupted build resumes.
    return DATA / "raw" / "coco_images"


def coco_browse_dir() -> Path:
    return DATA / "coco5"


def comparison_dir(name: str) -> Path:
    # A hyphen cannot occur in an experiment name, so this never collides with metrics/<exp>/.
    return METRICS / f"compare-{name}"


def loss_series(experiment: str) -> Path:
    """dvclive's series of the mean training loss every log_every steps."""
    return train_log_dir(experiment) / "plots" / "metrics" / "loss.tsv"
