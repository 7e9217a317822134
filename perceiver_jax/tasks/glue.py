"""GLUE fine-tuning: sentence(-pair) classification, or regression for STS-B.

Outputs are [B, K]: class logits, or for STS-B (K = 1) the predicted similarity score. Labels
are int class ids [B], or float scores [B] for STS-B. Training minimises softmax
cross-entropy (`train/accuracy`), or for STS-B the mean squared error. Evaluation keeps every
real example's outputs, gathers them from every batch and process (`base.allgather_rows`), and
reports GLUE's official metrics over the whole split (`METRICS`): Matthews correlation
(CoLA), F1 of class 1 and accuracy (MRPC, QQP), Pearson and Spearman correlation (STS-B),
accuracy elsewhere; plus `eval/score` (the task's GLUE score: the metric, or the mean of its
two), `eval/loss` and `eval/count`.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from perceiver_jax import losses
from perceiver_jax.data import glue as glue_data
from perceiver_jax.tasks import base

# GLUE task -> the metrics of its score, in the benchmark's order.
METRICS: dict[str, tuple[str, ...]] = {
  "cola": ("matthews",),
  "sst2": ("accuracy",),
  "mrpc": ("f1", "accuracy"),
  "stsb": ("pearson", "spearman"),
  "qqp": ("f1", "accuracy"),
  "mnli": ("accuracy",),
  "qnli": ("accuracy",),
  "rte": ("accuracy",),
  "wnli": ("accuracy",),
  glue_data.CUSTOM: ("accuracy",),  # a classification set of one's own (data/glue.custom_task)
}


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
  """Fraction of int predictions [N] equal to labels [N]."""
  return float(np.mean(np.asarray(predictions) == np.asarray(labels)))


def f1(predictions: np.ndarray, labels: np.ndarray) -> float:
  """F1 of class 1 for binary predictions and labels [N] (0 when there is no true positive)."""
  predictions, labels = np.asarray(predictions) == 1, np.asarray(labels) == 1
  true_pos = np.sum(predictions & labels)
  if true_pos == 0:
    return 0.0
  precision, recall = true_pos / np.sum(predictions), true_pos / np.sum(labels)
  return float(2 * precision * recall / (precision + recall))


def matthews(predictions: np.ndarray, labels: np.ndarray) -> float:
  """Matthews correlation of binary predictions and labels [N] (0 when undefined)."""
  p, y = np.asarray(predictions) == 1, np.asarray(labels) == 1
  tp, tn = float(np.sum(p & y)), float(np.sum(~p & ~y))
  fp, fn = float(np.sum(p & ~y)), float(np.sum(~p & y))
  denominator = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
  return float((tp * tn - fp * fn) / denominator) if denominator else 0.0


def pearson(x: np.ndarray, y: np.ndarray) -> float:
  """Pearson correlation of x [N] and y [N] (0 when either is constant)."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  x, y = x - x.mean(), y - y.mean()
  denominator = np.sqrt(np.sum(x * x) * np.sum(y * y))
  return float(np.sum(x * y) / denominator) if denominator else 0.0


def _ranks(x: np.ndarray) -> np.ndarray:
  """1-based ranks of x [N], ties sharing their average rank."""
  x = np.asarray(x, np.float64)
  order = np.argsort(x, kind="stable")
  values, first, counts = np.unique(x[order], return_index=True, return_counts=True)
  del values
  average = first + (counts + 1) / 2.0  # the mean of ranks first + 1 .. first + count
  ranks = np.empty(len(x))
  ranks[order] = np.repeat(average, counts)
  return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> float:
  """Spearman rank correlation of x [N] and y [N] (the Pearson correlation of their ranks)."""
  return pearson(_ranks(x), _ranks(y))


_METRIC_FNS = {
  "accuracy": accuracy,
  "f1": f1,
  "matthews": matthews,
  "pearson": pearson,
  "spearman": spearman,
}


def split_metrics(glue_task: str, outputs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
  """GLUE's metrics of one whole split: outputs [N, K] (scores [N, 1] for STS-B), labels [N].

  Returns `{"eval/<metric>": value, "eval/score": mean of the task's metrics,
  "eval/loss": cross-entropy (or squared error), "eval/count": N}`.
  """
  outputs = np.asarray(outputs, np.float64)
  if glue_data.is_regression(glue_task):
    predictions = outputs[:, 0]
    loss = np.mean((predictions - labels) ** 2) if len(labels) else 0.0
  else:
    predictions = np.argmax(outputs, axis=-1)
    shifted = outputs - outputs.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))
    picked = np.take_along_axis(log_probs, np.asarray(labels, np.int64)[:, None], axis=-1)
    loss = -np.mean(picked) if len(labels) else 0.0
  result = {f"eval/{m}": _METRIC_FNS[m](predictions, labels) for m in METRICS[glue_task]}
  result["eval/score"] = float(np.mean(list(result.values())))
  result["eval/loss"] = float(loss)
  result["eval/count"] = float(len(labels))
  return result


@dataclasses.dataclass(frozen=True)
class Glue(base.Task):
  """Attributes:
  glue_task: the GLUE task ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte",
    "wnli", or "custom": accuracy): its loss (regression for "stsb") and metrics. Must match
    `config.data.task`.
  """

  NAME = "glue"

  glue_task: str = "sst2"

  def __post_init__(self):
    if self.glue_task not in METRICS:
      base.fail("glue_task", self.glue_task, f"expected one of {sorted(METRICS)}")

  @property
  def is_regression(self) -> bool:
    return glue_data.is_regression(self.glue_task)

  def loss(self, outputs, batch):
    labels = batch["labels"]
    if self.is_regression:
      error = outputs[..., 0].astype(jnp.float32) - labels.astype(jnp.float32)
      return jnp.mean(error**2), {}
    loss = losses.softmax_cross_entropy(outputs, labels)
    return loss, {"accuracy": jnp.mean(losses.topk_correct(outputs, labels, 1))}

  def eval_step(self, apply_fn, batch, axis_name):
    """{"outputs": float32 [b, K]}: the split's metrics need every example's outputs."""
    del axis_name  # the metrics are computed on the host, over the gathered split
    return {"outputs": apply_fn(batch["inputs"]).astype(jnp.float32)}

  def evaluator(self) -> OutputsEvaluator:
    return OutputsEvaluator(self.glue_task)


class OutputsEvaluator:
  """Keeps the real examples' outputs and labels; GLUE's metrics over all processes."""

  def __init__(self, glue_task: str):
    self._glue_task = glue_task
    self._outputs, self._labels = [], []

  def add(self, step_outputs, batch) -> None:
    self._outputs.append(base.real_rows(step_outputs["outputs"], batch["mask"]))
    self._labels.append(base.real_rows(batch["labels"], batch["mask"]))

  def result(self) -> dict[str, float]:
    outputs, labels = np.concatenate(self._outputs), np.concatenate(self._labels)
    return split_metrics(self._glue_task, base.allgather_rows(outputs), base.allgather_rows(labels))
