"""Switches that reproduce a study's own protocol where cnnlab's default differs: each does
exactly what it claims, checked against torchvision or a formula, and changes something.

- augment.after_preprocess (study 001 augmented after resizing to 224);
- score_augmented (study 001 scored test images through the training transform);
- smoothed_eval_loss (study 003's test loss used the label-smoothed criterion).
"""

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from test_evaluation import tiny_cifar, tiny_params
from test_training import experiment

from cnnlab import paths
from cnnlab.config import Augment, Normalize, ParamsError, Preprocess, parse_params
from cnnlab.data.augment import model_input
from cnnlab.data.loader import DeviceSplit
from cnnlab.data.prepared import save_prepared
from cnnlab.evaluate.record import MetricsRecord
from cnnlab.evaluate.scoring import predict
from cnnlab.evaluate.stage import evaluate_experiment
from cnnlab.train.stage import train_experiment

CPU = torch.device("cpu")
NORM = Normalize((0.5, 0.4, 0.3), (0.2, 0.25, 0.3))


def images(n=6, side=8, seed=0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(0, 256, (n, 3, side, side), dtype=np.uint8))


def late_recipe(after: bool):
    return experiment(normalize=NORM, preprocess=Preprocess(resize=12, center_crop=10),
                      augment=Augment(hflip=True, crop_padding=2, order=("hflip", "crop",
                                                                         "autoaugment"),
                                      after_preprocess=after))


def torchvision_reference(x: torch.Tensor, exp, seed: int, after: bool) -> torch.Tensor:
    """Flip then pad-and-crop per image with torchvision's functional ops, at the stored size
    or after resize (antialiased bilinear, as torchvision's Resize) and centre crop, drawing
    the same flips and offsets from a generator seeded alike."""
    gen = torch.Generator().manual_seed(seed)

    def augment(batch):
        flips = torch.rand(len(batch), generator=gen) < 0.5
        pad = exp.augment.crop_padding
        dy = torch.randint(0, 2 * pad + 1, (len(batch),), generator=gen)
        dx = torch.randint(0, 2 * pad + 1, (len(batch),), generator=gen)
        out = []
        for img, flip, y, x_ in zip(batch, flips, dy, dx, strict=True):
            img = TF.horizontal_flip(img) if flip else img
            h, w = img.shape[-2:]
            out.append(TF.crop(TF.pad(img, [pad]), int(y), int(x_), h, w))
        return torch.stack(out)

    def resize(batch):
        side, crop = exp.preprocess.resize, exp.preprocess.center_crop
        return TF.center_crop(TF.resize(batch.float(), [side, side], antialias=True), [crop])

    x = resize(augment(x)) if not after else augment(resize(x).round().clamp(0, 255).byte())
    mean, std = torch.tensor(NORM.mean).view(1, 3, 1, 1), torch.tensor(NORM.std).view(1, 3, 1, 1)
    return (x.float() / 255 - mean) / std


@pytest.mark.parametrize("after", [False, True])
def test_augmentation_runs_before_or_after_the_resize_as_asked(after):
    x, exp = images(), late_recipe(after)
    got = model_input(x, exp, torch.Generator().manual_seed(3))
    want = torchvision_reference(x, exp, 3, after)
    assert got.shape == want.shape == (6, 3, 10, 10)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)


def test_the_two_orders_give_different_inputs():
    x = images()
    early = model_input(x, late_recipe(False), torch.Generator().manual_seed(3))
    late = model_input(x, late_recipe(True), torch.Generator().manual_seed(3))
    assert not torch.allclose(early, late, atol=1e-3)


def test_scoring_without_augmentation_ignores_the_switch():
    x = images()
    clean = model_input(x, late_recipe(True))
    assert torch.equal(clean, model_input(x, late_recipe(False)))


class Linear(torch.nn.Module):
    def __init__(self, side):
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(3 * side * side, 2)

    def forward(self, x):
        return self.fc(x.flatten(1))


def two_class_split(n=40, side=8):
    from cnnlab.data.prepared import Split
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, n)
    pixels = rng.integers(0, 256, (n, side, side, 3)).astype(np.uint8)
    return DeviceSplit(Split(pixels, labels.astype(np.int64)), CPU)


def test_augmented_scoring_applies_the_training_augmentation_seeded():
    split, model = two_class_split(), Linear(8)
    exp = experiment(normalize=NORM, augment=Augment(hflip=True, crop_padding=2))
    scored = predict(model, split, exp, batch_size=16, augment=torch.Generator().manual_seed(7))
    # Reference: the same draws, batch by batch, through the model by hand.
    gen, probs = torch.Generator().manual_seed(7), []
    with torch.no_grad():
        for images_, _ in split.batches(16):
            probs.append(torch.softmax(model(model_input(images_, exp, gen)), 1))
    np.testing.assert_allclose(scored.probs, torch.cat(probs).numpy(), rtol=1e-6, atol=1e-7)
    clean = predict(model, split, exp, batch_size=16)
    assert not np.allclose(clean.probs, scored.probs)
    again = predict(model, split, exp, batch_size=16, augment=torch.Generator().manual_seed(7))
    assert np.array_equal(again.probs, scored.probs)


@pytest.mark.parametrize("smoothing", [0.04, 0.3])
def test_the_smoothed_eval_loss_is_the_label_smoothed_cross_entropy(smoothing):
    split, model = two_class_split(), Linear(8)
    exp = experiment(normalize=NORM, label_smoothing=smoothing)
    plain = predict(model, split, exp).loss
    smoothed = predict(model, split, dataclasses.replace(exp, smoothed_eval_loss=True)).loss
    with torch.no_grad():
        logp = torch.log_softmax(model(model_input(split.images, exp)), 1)
    labels = split.labels
    nll = -logp[torch.arange(len(labels)), labels]
    # (1 - e) * NLL + e * mean over classes of -log p: the formula, not torch's implementation
    formula = ((1 - smoothing) * nll + smoothing * (-logp).mean(1)).mean().item()
    assert smoothed == pytest.approx(formula, rel=1e-5)
    assert plain == pytest.approx(nll.mean().item(), rel=1e-5)
    assert smoothed != pytest.approx(plain, rel=1e-3)


@pytest.mark.parametrize(("changes", "message"), [
    ({"score_augmented": True}, "score_augmented: true needs an augmentation"),
    ({"smoothed_eval_loss": True}, "smoothed_eval_loss: true needs label_smoothing > 0"),
])
def test_a_switch_that_would_do_nothing_is_a_one_line_error(changes, message):
    data = tiny_params_dict()
    data["experiments"]["ann"].update(changes)
    with pytest.raises(ParamsError, match=message):
        parse_params(data)


def tiny_params_dict():
    params = tiny_params()
    exp = dataclasses.asdict(params.experiments["ann"])
    keep = ("model", "dataset", "epochs", "batch_size", "seed", "normalize", "device")
    return {"data": {"cifar10": {"url": "unused", "md5": None},
                     "coco5": {"annotations": {"url": "unused", "md5": None},
                               "classes": ["boat", "dog"], "train_per_class": 1,
                               "val_per_class": 1}},
            "experiments": {"ann": {**{k: exp[k] for k in keep},
                                    "optimizer": {"name": "adam", "lr": 0.003}}}}


def test_the_evaluate_stage_reports_the_augmented_score_beside_the_clean_one(tmp_path,
                                                                             monkeypatch):
    monkeypatch.chdir(tmp_path)
    save_prepared(tiny_cifar(), paths.prepared_dir("cifar10"))
    data = tiny_params_dict()
    data["experiments"]["ann"].update(epochs=1, augment={"hflip": True, "crop_padding": 4},
                                      score_augmented=True)
    params = parse_params(data)
    train_experiment(params, "ann")
    evaluate_experiment(params, "ann")
    record = MetricsRecord.read(paths.metrics_file("ann"), "ann")
    exp = params.experiment("ann")
    from cnnlab.models.checkpoints import load_model
    model = load_model(exp, "ann", 10, paths.model_checkpoint("ann"), CPU)
    test = DeviceSplit(tiny_cifar().split("test"), CPU)
    want = predict(model, test, exp, augment=torch.Generator().manual_seed(exp.seed))
    assert record.augmented_accuracy == pytest.approx(want.accuracy)
    assert record.accuracy == pytest.approx(predict(model, test, exp).accuracy)
    assert "augmented_accuracy" in paths.metrics_file("ann").read_text()


def test_f_cross_entropy_agrees_with_the_formula_used_above():
    """Guard for the reference itself: torch's label smoothing is the formula's."""
    logits, labels = torch.randn(5, 3), torch.tensor([0, 2, 1, 1, 0])
    logp = torch.log_softmax(logits, 1)
    formula = (0.9 * -logp[torch.arange(5), labels] + 0.1 * (-logp).mean(1)).mean()
    torch.testing.assert_close(F.cross_entropy(logits, labels, label_smoothing=0.1), formula)
