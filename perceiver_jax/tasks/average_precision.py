"""Average precision and its mean over classes (mAP), the AudioSet metric.

`mean_average_precision(scores, labels)` equals scikit-learn's
`average_precision_score(labels, scores, average="macro")`: per class, precision is taken at
every distinct score threshold (tied scores enter together) and weighted by the increase in
recall, AP = sum_n (R_n - R_{n-1}) P_n, with no interpolation. A class without a positive
example has AP 0 there; `empty="skip"` leaves such classes out of the mean instead.
"""

from __future__ import annotations

import numpy as np

EMPTY_POLICIES = ("zero", "skip")


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
  """AP of one class: `scores` [N] (higher = more confident), `labels` [N] in {0, 1}."""
  scores = np.asarray(scores, np.float64)
  labels = np.asarray(labels)
  if scores.shape != labels.shape or scores.ndim != 1:
    raise ValueError(f"scores {scores.shape} and labels {labels.shape} must be equal 1-D shapes")
  if not np.all(np.isfinite(scores)):
    raise ValueError("scores contain NaN or infinity")
  if not np.all((labels == 0) | (labels == 1)):
    raise ValueError("labels must be 0 or 1")
  order = np.argsort(-scores, kind="stable")
  sorted_scores, sorted_labels = scores[order], labels[order].astype(np.float64)
  true_positives = np.cumsum(sorted_labels)
  if true_positives.size == 0 or true_positives[-1] == 0:
    return 0.0
  # One operating point per distinct score: the last position of each run of ties.
  last_of_run = np.r_[np.diff(sorted_scores) != 0, True]
  true_positives = true_positives[last_of_run]
  predicted = (np.arange(1, scores.size + 1, dtype=np.float64))[last_of_run]
  precision = true_positives / predicted
  recall = true_positives / true_positives[-1]
  return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def mean_average_precision(scores: np.ndarray, labels: np.ndarray, *, empty: str = "zero") -> float:
  """mAP over classes: `scores` and `labels` are [N, num_classes]."""
  if empty not in EMPTY_POLICIES:
    raise ValueError(f"empty={empty!r}: expected one of {EMPTY_POLICIES}")
  scores, labels = np.asarray(scores), np.asarray(labels)
  if scores.ndim != 2 or scores.shape != labels.shape:
    raise ValueError(f"scores {scores.shape} and labels {labels.shape} must be equal [N, C]")
  per_class = [
    average_precision(scores[:, c], labels[:, c])
    for c in range(scores.shape[1])
    if empty == "zero" or labels[:, c].any()
  ]
  if not per_class:
    raise ValueError("no class has a positive example")
  return float(np.mean(per_class))
