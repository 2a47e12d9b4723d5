"""Study 001's scoring protocol against cnnlab's: one model scored on clean test images, and on
test images through the training augmentation (the study's test loader used its training
transform), with the augmentation before the resize (cnnlab) or after it (the study's order).

    python benchmarks/study_differences.py [--experiment resnet18_tl] [--images 1000]
        [--seeds 0 1 2] [--weights none]

Needs `dvc repro prepare_cifar10`. The model is the experiment's architecture with the given
weights (default: random, as no ImageNet weights can be fetched offline), not trained: the
table shows how the protocol moves the score of one fixed model, each augmented score as mean ±
std over the augmentation draws' seeds.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from cnnlab import paths  # noqa: E402
from cnnlab.config import load_params  # noqa: E402
from cnnlab.data.loader import DeviceSplit  # noqa: E402
from cnnlab.data.prepared import load_prepared  # noqa: E402
from cnnlab.data.selection import select_data  # noqa: E402
from cnnlab.evaluate.scoring import predict  # noqa: E402
from cnnlab.models import build_model  # noqa: E402
from cnnlab.text_tables import to_markdown  # noqa: E402


def scores(args: argparse.Namespace) -> list[dict[str, str]]:
    exp = load_params().experiment(args.experiment)
    exp = dataclasses.replace(exp, weights=args.weights, eval_subset=args.images,
                              eval_fraction=1.0)
    data = select_data(exp, load_prepared(paths.prepared_dir(exp.dataset)))
    split = DeviceSplit(data.split(exp.eval_split), torch.device("cpu"))
    torch.manual_seed(exp.seed)
    model = build_model(exp.model, len(data.classes), weights=exp.weights).eval()
    rows = [{"scoring": "clean test images (cnnlab)",
             "accuracy": f"{predict(model, split, exp).accuracy:.4f}"}]
    for after, where in ((False, "before the resize (cnnlab's order)"),
                         (True, "after the resize (the study's order)")):
        late = dataclasses.replace(exp, augment=dataclasses.replace(exp.augment,
                                                                    after_preprocess=after))
        values = [predict(model, split, late, augment=torch.Generator().manual_seed(s)).accuracy
                  for s in args.seeds]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        rows.append({"scoring": f"augmented test images, augmentation {where}",
                     "accuracy": f"{statistics.mean(values):.4f} ± {spread:.4f}"})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", default="resnet18_tl")
    parser.add_argument("--images", type=int, default=1000, help="test images scored")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="seeds of the augmentation draws")
    parser.add_argument("--weights", default="none", help="none, imagenet or a state dict path")
    args = parser.parse_args()
    print(f"{args.experiment}, weights {args.weights}, {args.images} test images, augmentation "
          f"seeds {' '.join(map(str, args.seeds))}")
    print(to_markdown(scores(args)))


if __name__ == "__main__":
    main()
