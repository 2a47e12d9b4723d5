"""Metrics are pure functions; checked against hand-computed values."""

import numpy as np
import pytest

from cnnlab.evaluate.metrics import classification_metrics


def test_hand_computed_example():
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 1, 1, 0, 2])
    m = classification_metrics(y_true, y_pred, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    # precision: a 2/3, b 1/2, c 1; recall: a 2/3, b 1/2, c 1
    assert m["precision_macro"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert m["recall_macro"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert m["f1_macro"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert m["per_class"] == pytest.approx({"a": 2 / 3, "b": 0.5, "c": 1.0})


def test_class_never_predicted_or_absent_does_not_crash():
    m = classification_metrics(np.array([0, 0]), np.array([0, 0]), ["a", "b"])
    assert m["accuracy"] == 1.0 and m["per_class"] == {"a": 1.0, "b": 0.0}
    assert m["precision_macro"] == pytest.approx(0.5)


def test_classification_report_rows_match_hand_computed_values():
    from cnnlab.evaluate.metrics import classification_report_rows

    rows = classification_report_rows(np.array([0, 0, 0, 1, 1, 2]), np.array([0, 0, 1, 1, 0, 2]),
                                      ["a", "b", "c"])
    assert [r["class"] for r in rows] == ["a", "b", "c", "macro avg", "weighted avg"]
    assert rows[0] == pytest.approx({"class": "a", "precision": 2 / 3, "recall": 2 / 3,
                                     "f1": 2 / 3, "support": 3})
    assert rows[1]["support"] == 2 and rows[4]["support"] == 6
    assert rows[4]["f1"] == pytest.approx((3 * 2 / 3 + 2 * 0.5 + 1 * 1.0) / 6)
