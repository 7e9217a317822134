"""Multi-label classification (AudioSet): per-class sigmoid cross-entropy, evaluated by mAP.

Outputs are logits [B, K]; labels are multi-hot [B, K] in [0, 1]. mAP ranks every example of
the split per class, so evaluation keeps each real example's sigmoid scores [K] (averaged over
its windows), gathers them from every batch and process, and reports `eval/mAP`, `eval/loss`
(the mean binary cross-entropy of those scores) and `eval/count`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from perceiver_jax import losses
from perceiver_jax.tasks import average_precision
from perceiver_jax.tasks import base
from perceiver_jax.tasks import windows

# Scores are clipped away from 0 and 1 so that a confident mistake costs a finite loss.
_PROB_EPS = 1e-7


@dataclasses.dataclass(frozen=True)
class MultiLabel(base.Task):
  """Attributes:
  eval_windows: W >= 0 windows per evaluation example, sigmoid scores averaged.
  """

  NAME = "multi_label"

  eval_windows: int = 0

  def __post_init__(self):
    if self.eval_windows < 0:
      base.fail("eval_windows", self.eval_windows, "must be 0 (none) or positive")

  def loss(self, outputs, batch):
    return losses.sigmoid_cross_entropy(outputs, batch["labels"]), {}

  def eval_step(self, apply_fn, batch, axis_name):
    """{"scores": float32 [b, K]}: per-example sigmoid scores (mAP needs the whole split)."""
    del axis_name  # the ranking is done on the host, over the gathered split
    logits = apply_fn(windows.fold(batch["inputs"], self.eval_windows)).astype(jnp.float32)
    return {"scores": windows.average(jax.nn.sigmoid(logits), self.eval_windows)}

  def evaluator(self) -> ScoresEvaluator:
    return ScoresEvaluator()


class ScoresEvaluator:
  """Keeps the real examples' scores and labels; mAP and BCE over all processes at the end."""

  def __init__(self):
    self._scores, self._labels = [], []

  def add(self, step_outputs, batch) -> None:
    self._scores.append(base.real_rows(step_outputs["scores"], batch["mask"]))
    self._labels.append(base.real_rows(batch["labels"], batch["mask"]))

  def result(self) -> dict[str, float]:
    scores = base.allgather_rows(np.concatenate(self._scores))
    labels = base.allgather_rows(np.concatenate(self._labels))
    probs = np.clip(scores.astype(np.float64), _PROB_EPS, 1 - _PROB_EPS)
    bce = -(labels * np.log(probs) + (1 - labels) * np.log(1 - probs)).mean(axis=-1)
    return {
      "eval/mAP": average_precision.mean_average_precision(scores, labels),
      "eval/loss": float(bce.mean()),
      "eval/count": float(len(labels)),
    }
