"""Each recipe feature of the shared loop on its own: schedules, MixUp, label smoothing, gradient
clipping, the best checkpoint, Glorot init, and the seeded hold-out and subsets."""

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_training import RecordingLogger, experiment, separable_dataset

from cnnlab.config import Augment, Scheduler
from cnnlab.data.augment import model_input
from cnnlab.data.prepared import PreparedDataset, Split
from cnnlab.data.selection import select_data
from cnnlab.errors import CnnlabError
from cnnlab.models import build_model
from cnnlab.models.init import glorot_uniform_
from cnnlab.train.loop import train
from cnnlab.train.mixup import MixUp, mix, mixed_correct, mixed_cross_entropy

CPU = torch.device("cpu")


def test_onecycle_lr_at_every_step_equals_torchs_own_scheduler():
    sched = Scheduler(name="onecycle", max_lr=0.0122668, pct_start=0.3)  # recipe D's
    exp = experiment(epochs=3, log_every=1, scheduler=sched,
                     optimizer=dataclasses.replace(experiment().optimizer, name="adamw",
                                                   lr=0.00182, weight_decay=3.5e-5))
    logger = RecordingLogger()
    result = train(exp, separable_dataset(n=100), CPU, logger, progress=False)
    assert result.steps == 3 * 4  # 100 images, batch 32: 4 steps an epoch, the last short

    reference = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=0.00182)
    onecycle = torch.optim.lr_scheduler.OneCycleLR(reference, max_lr=0.0122668, epochs=3,
                                                   steps_per_epoch=4, pct_start=0.3,
                                                   anneal_strategy="cos")
    expected = []
    for _ in range(12):
        expected.append(reference.param_groups[0]["lr"])
        reference.step()
        onecycle.step()
    assert logger.lrs == pytest.approx(expected, rel=1e-12)
    assert logger.lrs[0] == pytest.approx(0.0122668 / 25)  # starts at max_lr / div_factor
    assert max(logger.lrs) == pytest.approx(0.0122668, rel=0.05)


@pytest.mark.parametrize(("sched", "expected"), [
    (Scheduler(name="step", step_size=1, gamma=0.5), [1e-3] * 4 + [5e-4] * 4 + [2.5e-4] * 4),
    # Two milestones and a gamma other than torch's default 0.1, so both must reach the scheduler.
    (Scheduler(name="multistep", milestones=(1, 2), gamma=0.3),
     [1e-3] * 4 + [3e-4] * 4 + [9e-5] * 4),
    (Scheduler(name="exponential", gamma=0.5), [1e-3] * 4 + [5e-4] * 4 + [2.5e-4] * 4),
])
def test_epoch_schedules_change_the_lr_between_epochs(sched, expected):
    logger = RecordingLogger()
    train(experiment(epochs=3, log_every=1, scheduler=sched), separable_dataset(n=100), CPU,
          logger, progress=False)
    assert logger.lrs == pytest.approx(expected)


def test_cosine_steps_every_batch_down_to_eta_min():
    logger = RecordingLogger()
    train(experiment(epochs=2, log_every=1, scheduler=Scheduler(name="cosine", eta_min=1e-5)),
          separable_dataset(n=100), CPU, logger, progress=False)
    steps = 8
    expected = [1e-5 + (1e-3 - 1e-5) * (1 + math.cos(math.pi * t / steps)) / 2
                for t in range(steps)]
    assert logger.lrs == pytest.approx(expected)


def test_mixup_lambda_is_a_seeded_beta_draw_and_pairs_a_permutation():
    a, b = MixUp(0.4, seed=7), MixUp(0.4, seed=7)
    gen = torch.Generator().manual_seed(0)
    lams = [a.draw(16, gen, CPU)[0] for _ in range(2000)]
    assert [b.draw(16, torch.Generator(), CPU)[0] for _ in range(3)] == lams[:3]  # seeded
    # Beta(0.4, 0.4): mean 1/2, variance ab/((a+b)^2 (a+b+1)) = 0.16 / (0.64 * 1.8) = 0.1389
    assert np.mean(lams) == pytest.approx(0.5, abs=0.03)
    assert np.var(lams) == pytest.approx(0.1389, abs=0.01)
    assert 0 <= min(lams) and max(lams) <= 1

    lam, perm = a.draw(16, gen, CPU)
    assert sorted(perm.tolist()) == list(range(16)) and perm.tolist() != list(range(16))
    x = torch.arange(16, dtype=torch.float32).view(16, 1, 1, 1).expand(16, 3, 2, 2)
    mixed = mix(x, lam, perm)
    assert torch.allclose(mixed[:, 0, 0, 0], lam * torch.arange(16.0) + (1 - lam) * perm.float())


def test_mixed_loss_equals_cross_entropy_against_mixed_soft_targets():
    torch.manual_seed(0)
    logits, labels = torch.randn(8, 10), torch.randint(0, 10, (8,))
    perm, lam = torch.randperm(8), 0.3
    soft = lam * F.one_hot(labels, 10) + (1 - lam) * F.one_hot(labels[perm], 10)
    expected = -(soft * logits.log_softmax(1)).sum(1).mean()
    assert mixed_cross_entropy(logits, labels, lam, perm) == pytest.approx(expected.item(),
                                                                           rel=1e-6)
    predicted = logits.argmax(1)
    expected_correct = (lam * (predicted == labels).sum()
                        + (1 - lam) * (predicted == labels[perm]).sum())
    assert mixed_correct(logits, labels, lam, perm).item() == pytest.approx(expected_correct)


def test_label_smoothed_loss_is_the_smoothed_target_cross_entropy():
    torch.manual_seed(1)
    logits, labels, eps = torch.randn(8, 10), torch.randint(0, 10, (8,)), 0.04
    log_p = logits.log_softmax(1)
    # Target (1 - eps) on the true class plus eps / K everywhere (Szegedy et al.).
    expected = ((1 - eps) * -log_p[torch.arange(8), labels] + eps * -log_p.mean(1)).mean()
    ident = torch.arange(8)
    assert mixed_cross_entropy(logits, labels, 1.0, ident, eps).item() == pytest.approx(
        expected.item(), rel=1e-6)
    assert F.cross_entropy(logits, labels, label_smoothing=eps).item() == pytest.approx(
        expected.item(), rel=1e-6)


@pytest.mark.parametrize("eps", [0.0, 0.04, 0.3])
def test_the_loop_trains_on_the_label_smoothed_loss(eps):
    """The loss the loop logs for its first step (one batch of every image, float32, no
    augmentation) is the smoothed-target cross-entropy of the initial model, by the formula."""
    data = separable_dataset(n=32)
    exp = experiment(epochs=1, batch_size=32, log_every=1, label_smoothing=eps,
                     augment=Augment(), speed=dataclasses.replace(
                         experiment().speed, precision="fp32", channels_last=False))
    log = RecordingLogger()
    train(exp, data, CPU, log, progress=False)
    torch.manual_seed(exp.seed)  # the loop's model initialisation
    model = build_model(exp.model, 2)
    split = data.split("train")
    x = model_input(torch.from_numpy(split.images).permute(0, 3, 1, 2), exp)
    with torch.no_grad():
        log_p = model(x).log_softmax(1)
    labels = torch.from_numpy(split.labels)
    nll = -log_p[torch.arange(len(labels)), labels]
    expected = ((1 - eps) * nll + eps * -log_p.mean(1)).mean().item()
    assert log.steps[0][1] == pytest.approx(expected, rel=1e-5)


def test_the_loop_trains_on_mixed_images_with_the_mixed_smoothed_loss(monkeypatch):
    """With MixUp, the first step (one batch of every image, float32, no augmentation) feeds the
    model lam-blends of two images, logs lam * CE(y) + (1 - lam) * CE(y[perm]) with smoothed
    targets, and counts correct predictions lam-weighted; each checked against the initial
    model by the formulas, with lam and perm as the loop drew them."""
    data, eps = separable_dataset(n=32), 0.1
    exp = experiment(epochs=1, batch_size=32, log_every=1, label_smoothing=eps, mixup_alpha=0.4,
                     augment=Augment(), speed=dataclasses.replace(
                         experiment().speed, precision="fp32", channels_last=False))
    draws, inputs = [], []
    original_draw = MixUp.draw
    monkeypatch.setattr(MixUp, "draw", lambda self, *a: draws.append(original_draw(self, *a))
                        or draws[-1])
    model_class = type(build_model(exp.model, 2))
    hook = torch.nn.modules.module.register_module_forward_pre_hook(
        lambda module, args: inputs.append(args[0].detach().clone())
        if type(module) is model_class else None)
    log = RecordingLogger()
    try:
        train(exp, data, CPU, log, progress=False)
    finally:
        hook.remove()
    (lam, perm), fed = draws[0], inputs[0]
    assert 0 < lam < 1
    split = data.split("train")
    images = model_input(torch.from_numpy(split.images).permute(0, 3, 1, 2), exp)
    # Which image each row blends: row i is lam * images[a] + (1 - lam) * images[b].
    blends = lam * images[:, None] + (1 - lam) * images[None, :]  # (a, b, C, H, W)
    pairs = [divmod(int((blends - row).flatten(2).abs().amax(2).argmin()), len(images))
             for row in fed]
    for row, (a, b) in zip(fed, pairs, strict=True):
        torch.testing.assert_close(row, blends[a, b], rtol=0, atol=1e-5)
    order = torch.tensor([a for a, _ in pairs])
    assert torch.equal(order[perm], torch.tensor([b for _, b in pairs]))
    torch.manual_seed(exp.seed)  # the loop's model initialisation
    with torch.no_grad():
        log_p = build_model(exp.model, 2)(fed).log_softmax(1)
    labels = torch.from_numpy(split.labels)[order]

    def smoothed_ce(y):
        return ((1 - eps) * -log_p[torch.arange(len(y)), y] + eps * -log_p.mean(1)).mean()

    expected = lam * smoothed_ce(labels) + (1 - lam) * smoothed_ce(labels[perm])
    assert log.steps[0][1] == pytest.approx(expected.item(), rel=1e-5)
    predicted = log_p.argmax(1)
    correct = lam * (predicted == labels).sum() + (1 - lam) * (predicted == labels[perm]).sum()
    assert log.epochs[0][2]["train_accuracy"] == pytest.approx(correct.item() / 32, rel=1e-6)


def test_gradient_clipping_bounds_the_update_of_one_sgd_step():
    # One SGD step (lr 1, no momentum) moves the weights by exactly the clipped gradient,
    # whose global norm is the clip value when the raw gradient is larger.
    data = separable_dataset(n=32)
    sgd = dataclasses.replace(experiment().optimizer, name="sgd", lr=1.0, betas=None, eps=None,
                              momentum=0.0, nesterov=False)
    exp = experiment(epochs=1, batch_size=32, optimizer=sgd, grad_clip_norm=1e-3,
                     augment=dataclasses.replace(experiment().augment, hflip=False,
                                                 crop_padding=0))
    torch.manual_seed(exp.seed)
    before = build_model(exp.model, 2).state_dict()
    after = train(exp, data, CPU, progress=False).model.state_dict()
    delta = torch.cat([(after[k] - before[k]).flatten() for k in before])
    assert delta.norm().item() == pytest.approx(1e-3, rel=1e-4)

    unclipped = train(dataclasses.replace(exp, grad_clip_norm=None), data, CPU,
                      progress=False).model.state_dict()
    raw = torch.cat([(unclipped[k] - before[k]).flatten() for k in before])
    assert raw.norm().item() > 1e-2  # the clip did bind


def test_keep_best_returns_the_best_epochs_weights_not_the_last():
    # Scored on the train images with their labels swapped, the more the model learns the worse
    # it scores (here about 0.53, then 0): the first epoch is the best (ties go to the first),
    # and the final weights are not the best ones, so handing back the final weights, or the
    # last epoch of a tie, cannot pass.
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 256)
    images = (rng.integers(0, 100, (256, 32, 32, 3)) + 20 * labels[:, None, None, None])
    train_split = Split(images.astype(np.uint8), labels.astype(np.int64))
    swapped = Split(train_split.images, 1 - train_split.labels)
    data = PreparedDataset("toy", ("dark", "bright"), {"train": train_split, "test": swapped})
    exp = experiment(epochs=3, eval_each_epoch=True, keep_best=True, augment=Augment())
    result = train(exp, data, CPU, progress=False)
    accuracies = [row["test_accuracy"] for row in result.history]
    assert accuracies[0] == max(accuracies), accuracies
    assert result.best_epoch == 1
    # The independent reference: the same run stopped after its best epoch. No schedule, so
    # the first epoch of a 3-epoch run is the whole of a 1-epoch run, bit for bit on the CPU.
    reference = train(dataclasses.replace(exp, epochs=1), data, CPU, progress=False)
    expected = reference.model.state_dict()
    assert set(result.best_state) == set(expected)
    assert all(torch.equal(result.best_state[k], v) for k, v in expected.items())
    final = result.model.state_dict()
    assert not all(torch.equal(result.best_state[k], v) for k, v in final.items())


def test_keep_best_needs_per_epoch_scores():
    with pytest.raises(CnnlabError, match="keep_best needs eval_each_epoch"):
        experiment(keep_best=True)


def test_glorot_uniform_init_has_keras_bounds_and_zero_biases():
    torch.manual_seed(0)
    model = glorot_uniform_(build_model("dropcnn", 10))
    for layer in model.modules():
        if isinstance(layer, (torch.nn.Conv2d, torch.nn.Linear)):
            w = layer.weight
            fan_in = w.shape[1] * w[0, 0].numel()
            fan_out = w.shape[0] * w[0, 0].numel()
            limit = math.sqrt(6 / (fan_in + fan_out))
            assert w.abs().max() <= limit and w.abs().max() > 0.95 * limit
            assert w.std().item() == pytest.approx(limit / math.sqrt(3), rel=0.1)
            assert torch.count_nonzero(layer.bias) == 0


def indexed_dataset(n_train=1000, n_test=200) -> PreparedDataset:
    """Image i of train holds the number i in its first pixels, so subsets can be identified."""
    def split(n, offset):
        images = np.zeros((n, 4, 4, 3), np.uint8)
        ids = np.arange(n) + offset
        images[:, 0, 0, 0], images[:, 0, 0, 1] = ids % 256, ids // 256
        return Split(images, (ids % 2).astype(np.int64))
    return PreparedDataset("toy", ("a", "b"), {"train": split(n_train, 0),
                                               "test": split(n_test, 5000)})


def ids(split: Split) -> set[int]:
    pixels = split.images[:, 0, 0, :2].astype(int)
    return set((pixels[:, 0] + 256 * pixels[:, 1]).tolist())


def test_holdout_and_subsets_are_seeded_sized_and_disjoint():
    dataset = indexed_dataset()
    exp = experiment(val_fraction=0.2, train_fraction=0.5, eval_fraction=0.1, data_seed=42)
    a, b = select_data(exp, dataset), select_data(exp, dataset)
    other = select_data(dataclasses.replace(exp, data_seed=43), dataset)
    assert (len(a.split("train")), len(a.split("val")), len(a.split("test"))) == (400, 200, 20)
    for name in ("train", "val", "test"):
        assert ids(a.split(name)) == ids(b.split(name))  # same data_seed, same images
        assert ids(a.split(name)) != ids(other.split(name))
    assert not ids(a.split("train")) & ids(a.split("val"))  # the hold-out never leaks
    assert ids(a.split("train")) | ids(a.split("val")) <= set(range(1000))
    assert ids(a.split("test")) <= set(range(5000, 5200))
    # The training seed does not move the data: a sweep over seeds trains on the same images.
    assert ids(select_data(dataclasses.replace(exp, seed=9), dataset).split("train")) == ids(
        a.split("train"))


def test_subset_caps_take_the_smaller_of_fraction_and_cap():
    dataset = indexed_dataset()
    capped = select_data(experiment(train_fraction=0.5, train_subset=70, eval_subset=30),
                         dataset)
    assert (len(capped.split("train")), len(capped.split("test"))) == (70, 30)
    loose = select_data(experiment(train_fraction=0.05, train_subset=700), dataset)
    assert len(loose.split("train")) == 50  # 5% of 1,000 is under the cap


def test_the_eval_subset_is_drawn_from_a_stream_of_its_own():
    """With train and test of one size and the same fractions, one stream would pick the same
    positions in both; the eval subset's own stream picks others."""
    dataset = indexed_dataset(n_train=200, n_test=200)
    data = select_data(experiment(train_fraction=0.1, eval_fraction=0.1, data_seed=3), dataset)
    train_positions = ids(data.split("train"))
    test_positions = {i - 5000 for i in ids(data.split("test"))}
    assert len(train_positions) == len(test_positions) == 20
    assert train_positions != test_positions


def test_holdout_is_the_studys_train_test_split():
    from sklearn.model_selection import train_test_split

    dataset = indexed_dataset()
    _, val_idx = train_test_split(np.arange(1000), test_size=0.2, random_state=42)
    data = select_data(experiment(val_fraction=0.2, data_seed=42), dataset)
    assert ids(data.split("val")) == set(val_idx.tolist())


def test_val_split_needs_a_holdout_and_a_dataset_val_split_is_not_held_out_twice():
    with pytest.raises(CnnlabError, match="has no split 'val'.*val_fraction > 0"):
        select_data(experiment(), indexed_dataset()).split("val")
    dataset = indexed_dataset()
    with_val = PreparedDataset("coco", dataset.classes, {**dataset.splits,
                                                         "val": dataset.split("test")})
    with pytest.raises(CnnlabError, match="already has a val split"):
        select_data(experiment(val_fraction=0.2), with_val)


def test_the_optimizer_gets_only_the_trainable_parameters(monkeypatch):
    import cnnlab.train.loop

    seen = {}
    real = cnnlab.train.loop.build_optimizer

    def spy(params, cfg, fast=None):
        seen["params"] = list(params)
        return real(seen["params"], cfg, fast)

    monkeypatch.setattr(cnnlab.train.loop, "build_optimizer", spy)
    exp = experiment(model="resnet18_tl", epochs=1, batch_size=16)
    result = train(exp, separable_dataset(n=16), CPU, progress=False)
    trainable = [p for p in result.model.parameters() if p.requires_grad]
    assert len(seen["params"]) == len(trainable)
    assert all(a is b for a, b in zip(seen["params"], trainable, strict=True))
    # layer4 + fc: 8,393,728 + 1,026 (2 classes)
    assert sum(p.numel() for p in seen["params"]) == 8_393_728 + 1_026
