"""Tests for perceiver_jax/tasks/average_precision.py against hand-computed values."""

import numpy as np
import pytest

from perceiver_jax.tasks import average_precision as ap


def test_hand_computed_ranking():
  # Ranked: + - + + -  -> precision 1, 2/3, 3/4 at recalls 1/3, 2/3, 1.
  scores = [0.9, 0.8, 0.7, 0.3, 0.2]
  labels = [1, 0, 1, 1, 0]
  assert ap.average_precision(np.array(scores), np.array(labels)) == pytest.approx(29 / 36)


def test_tied_scores_enter_together():
  # Threshold 0.5 takes both tied examples: P = 1/2 at R = 1/2; then P = 2/3 at R = 1.
  got = ap.average_precision(np.array([0.5, 0.5, 0.2]), np.array([1, 0, 1]))
  assert got == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)
  # The order of tied examples in the input does not matter.
  assert ap.average_precision(np.array([0.5, 0.5, 0.2]), np.array([0, 1, 1])) == pytest.approx(got)


def test_perfect_and_worst_rankings():
  assert ap.average_precision(np.array([3.0, 2.0, 1.0]), np.array([1, 1, 0])) == 1.0
  # Positives last: precision 1/3 at R = 1/2, 2/4 at R = 1.
  got = ap.average_precision(np.array([4.0, 3.0, 2.0, 1.0]), np.array([0, 0, 1, 1]))
  assert got == pytest.approx(0.5 * 1 / 3 + 0.5 * 2 / 4)


def test_mean_over_classes_and_empty_classes():
  scores = np.array([[0.9, 0.1, 0.3], [0.8, 0.7, 0.2], [0.7, 0.2, 0.1], [0.3, 0.9, 0.4]])
  labels = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0], [1, 1, 0]])
  class0 = 29 / 36  # the ranking of the first test
  class1 = 1.0  # both positives ranked first
  assert ap.mean_average_precision(scores, labels) == pytest.approx((class0 + class1 + 0) / 3)
  assert ap.mean_average_precision(scores, labels, empty="skip") == pytest.approx(
    (class0 + class1) / 2
  )


@pytest.mark.parametrize(
  "scores, labels, message",
  [
    (np.zeros((3, 2)), np.zeros((3,)), "must be equal"),
    (np.array([[np.nan], [1.0]]), np.array([[1], [0]]), "NaN or infinity"),
    (np.array([[0.1], [0.2]]), np.array([[2], [0]]), "labels must be 0 or 1"),
  ],
)
def test_bad_input(scores, labels, message):
  with pytest.raises(ValueError, match=message):
    ap.mean_average_precision(scores, labels)
