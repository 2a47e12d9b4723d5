"""Metrics are pure functions, and metrics/<exp>.json a record of numbers; checked against
hand-computed values."""

import json
import math

import numpy as np
import pytest

from cnnlab.errors import CnnlabError
from cnnlab.evaluate.metrics import classification_metrics, classification_report_rows
from cnnlab.evaluate.record import BestEpoch, InvalidRecord, MetricsRecord


def test_hand_computed_example():
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 1, 1, 0, 2])
    m = classification_metrics(y_true, y_pred, ["a", "b", "c"])
    assert m.accuracy == pytest.approx(4 / 6)
    # precision: a 2/3, b 1/2, c 1; recall: a 2/3, b 1/2, c 1
    assert m.precision_macro == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert m.recall_macro == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert m.f1_macro == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert m.per_class == pytest.approx({"a": 2 / 3, "b": 0.5, "c": 1.0})


def test_class_never_predicted_or_absent_does_not_crash():
    m = classification_metrics(np.array([0, 0]), np.array([0, 0]), ["a", "b"])
    assert m.accuracy == 1.0 and m.per_class == {"a": 1.0, "b": 0.0}
    assert m.precision_macro == pytest.approx(0.5)


def test_classification_report_rows_match_hand_computed_values():
    rows = classification_report_rows(np.array([0, 0, 0, 1, 1, 2]), np.array([0, 0, 1, 1, 0, 2]),
                                      ["a", "b", "c"])
    assert [r["class"] for r in rows] == ["a", "b", "c", "macro avg", "weighted avg"]
    assert rows[0] == pytest.approx({"class": "a", "precision": 2 / 3, "recall": 2 / 3,
                                     "f1": 2 / 3, "support": 3})
    assert rows[1]["support"] == 2 and rows[4]["support"] == 6
    assert rows[4]["f1"] == pytest.approx((3 * 2 / 3 + 2 * 0.5 + 1 * 1.0) / 6)


# metrics/<exp>.json: the record evaluate@<exp> writes and the report reads.


def hand_record(**changes) -> MetricsRecord:
    """y_true [0,0,0,1,1,2], y_pred [0,0,1,1,0,2] over classes c, a, b (in label order): the
    hand-computed scores of test_hand_computed_example, on a 2-epoch run that kept its best."""
    fields = dict(accuracy=4 / 6, precision_macro=(2 / 3 + 1 / 2 + 1) / 3,
                  recall_macro=(2 / 3 + 1 / 2 + 1) / 3, f1_macro=(2 / 3 + 1 / 2 + 1) / 3,
                  per_class={"c": 2 / 3, "a": 0.5, "b": 1.0}, params=1234,
                  trainable_params=1000, epochs=2, train_images=8, eval_images=6, seed=3,
                  split_accuracy={"train": 0.75},
                  best=BestEpoch(epoch=1, accuracy=0.5, f1_macro=0.25,
                                 split_accuracy={"train": 0.625}))
    return MetricsRecord(**{**fields, **changes})


HAND_FILE = """\
{
  "accuracy": 0.6666666666666666,
  "precision_macro": 0.7222222222222222,
  "recall_macro": 0.7222222222222222,
  "f1_macro": 0.7222222222222222,
  "train_accuracy": 0.75,
  "per_class": {
    "a": 0.5,
    "b": 1.0,
    "c": 0.6666666666666666
  },
  "params": 1234,
  "trainable_params": 1000,
  "epochs": 2,
  "train_images": 8,
  "eval_images": 6,
  "seed": 3,
  "best": {
    "epoch": 1,
    "accuracy": 0.5,
    "f1_macro": 0.25,
    "train_accuracy": 0.625
  }
}
"""


def leaves(node, path=""):
    if isinstance(node, dict):
        return [leaf for key, value in node.items() for leaf in leaves(value, f"{path}.{key}")]
    return [(path, node)]


def test_the_record_file_of_a_hand_computed_case(tmp_path):
    record = hand_record()
    assert record.text() == HAND_FILE
    record.write(tmp_path / "m.json")
    assert (tmp_path / "m.json").read_text(encoding="utf-8") == HAND_FILE
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]  # no temporary left beside it
    # The scores classification_metrics computes for that case are the ones written.
    scores = classification_metrics(np.array([0, 0, 0, 1, 1, 2]), np.array([0, 0, 1, 1, 0, 2]),
                                    ["c", "a", "b"])
    from_scores = hand_record(accuracy=scores.accuracy, precision_macro=scores.precision_macro,
                              recall_macro=scores.recall_macro, f1_macro=scores.f1_macro,
                              per_class=scores.per_class)
    assert dict(leaves(json.loads(from_scores.text()))) == pytest.approx(
        dict(leaves(json.loads(HAND_FILE))))


def test_the_record_holds_only_numbers_and_round_trips(tmp_path):
    record = hand_record()
    content = json.loads(record.text())
    for path, value in leaves(content):
        assert type(value) in (int, float), f"{path} is {value!r}"
    assert {type(v) for _, v in leaves(content["per_class"])} == {float}
    assert type(content["params"]) is int and type(content["best"]["epoch"]) is int
    record.write(tmp_path / "m.json")
    back = MetricsRecord.read(tmp_path / "m.json", "cnn")
    assert back == record and back.text() == record.text()
    assert back.split_accuracy == {"train": 0.75} and back.best.split_accuracy == {"train": 0.625}
    no_best = hand_record(best=None, split_accuracy={})
    assert MetricsRecord.from_json(json.loads(no_best.text())) == no_best
    assert set(json.loads(no_best.text())) == {"accuracy", "precision_macro", "recall_macro",
                                               "f1_macro", "per_class", "params",
                                               "trainable_params", "epochs", "train_images",
                                               "eval_images", "seed"}


def test_equal_records_give_equal_bytes():
    """Class and split order, ints given for fractions, numpy floats: the same numbers."""
    a = hand_record(per_class={"c": 2 / 3, "a": 0.5, "b": 1.0},
                    split_accuracy={"val": 0.5, "train": 0.75},
                    best=BestEpoch(1, 0.5, 0.25, {"val": 0.5, "train": 0.625}))
    b = hand_record(per_class={"a": np.float64(0.5), "b": 1, "c": 2 / 3},
                    split_accuracy={"train": 0.75, "val": 0.5},
                    best=BestEpoch(1, 0.5, 0.25, {"train": 0.625, "val": 0.5}))
    assert a == b and a.text() == b.text()
    assert '"b": 1.0' in b.text() and "float64" not in b.text()


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d.pop("f1_macro"), "lacks f1_macro"),
    (lambda d: d["best"].pop("epoch"), "lacks best.epoch"),
    (lambda d: d.update(accuracy="0.5"), "accuracy is '0.5', not a number"),
    (lambda d: d.update(accuracy=True), "accuracy is True, not a number"),
    (lambda d: d.update(recall_macro=1.5), "recall_macro is 1.5, not a fraction in [0, 1]"),
    (lambda d: d.update(f1_macro=math.nan), "f1_macro is nan, not a fraction in [0, 1]"),
    (lambda d: d["per_class"].update(a=-0.1), "per_class.a is -0.1, not a fraction in [0, 1]"),
    (lambda d: d.update(per_class={}), "per_class names no class"),
    (lambda d: d.update(per_class=[0.5]), "per_class is [0.5], not an object of numbers"),
    (lambda d: d.update(params=12.0), "params is 12.0, not a whole number"),
    (lambda d: d.update(eval_images=-1), "eval_images is -1, below 0"),
    (lambda d: d.update(device="cpu"), "device is not a metric of this record"),
    (lambda d: d.update(git_rev="0" * 40), "git_rev is not a metric of this record"),
    (lambda d: d.update(val_accuracy="high"), "split accuracy.val is 'high', not a number"),
    (lambda d: d["best"].update(epoch=3), "best.epoch 3 is after the last epoch 2"),
    (lambda d: d["best"].update(epoch=0), "best.epoch is 0, below 1"),
    (lambda d: d["best"].pop("train_accuracy"),
     "best scores the splits [], the last epoch ['train']"),
    (lambda d: d.update(best=[1]), "best is not a JSON object"),
])
def test_a_bad_record_says_what_is_wrong(change, message):
    data = json.loads(hand_record().text())
    change(data)
    with pytest.raises(InvalidRecord) as info:
        MetricsRecord.from_json(data)
    assert str(info.value) == message


def test_reading_a_bad_file_is_one_line_naming_the_file_and_the_stage(tmp_path):
    path = tmp_path / "cnn.json"
    with pytest.raises(CnnlabError, match=r"^\S+cnn\.json not found \(run `dvc repro "
                                          r"evaluate@cnn` first\)$"):
        MetricsRecord.read(path, "cnn")
    path.write_text("[1, 2", encoding="utf-8")
    with pytest.raises(CnnlabError, match=r"cnn\.json is not valid JSON \(.*\); re-run "
                                          r"`dvc repro -f evaluate@cnn`$"):
        MetricsRecord.read(path, "cnn")
    path.write_text(json.dumps({**json.loads(hand_record().text()), "seed": -1}))
    with pytest.raises(CnnlabError) as info:
        MetricsRecord.read(path, "cnn")
    assert str(info.value) == f"{path}: seed is -1, below 0; re-run `dvc repro -f evaluate@cnn`"
