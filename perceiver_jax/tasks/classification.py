"""Single-label classification: softmax cross-entropy, top-1/top-5 accuracy.

Outputs are logits [B, K]. Training labels are int class ids [B] or soft label distributions
[B, K] (MixUp/CutMix); evaluation labels may also be soft (top-k then takes the argmax).
Evaluation adds weighted sums over batches and devices and divides once, so a split is counted
exactly once whatever its padding: `eval/loss` (cross-entropy without smoothing), `eval/top1`,
`eval/top5` (top-min(5, K)), `eval/count`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from perceiver_jax import losses
from perceiver_jax.tasks import base
from perceiver_jax.tasks import windows


@dataclasses.dataclass(frozen=True)
class Classification(base.Task):
  """Attributes:
  label_smoothing: s in [0, 1): training targets become (1 - s) * labels + s / K.
  eval_windows: W >= 0 windows per evaluation example, softmax probabilities averaged.
  """

  NAME = "classification"

  label_smoothing: float = 0.0
  eval_windows: int = 0

  def __post_init__(self):
    if not 0.0 <= self.label_smoothing < 1.0:
      base.fail("label_smoothing", self.label_smoothing, "must be in [0, 1)")
    if self.eval_windows < 0:
      base.fail("eval_windows", self.eval_windows, "must be 0 (none) or positive")

  def loss(self, outputs, batch):
    labels = batch["labels"]
    loss = losses.softmax_cross_entropy(outputs, labels, label_smoothing=self.label_smoothing)
    return loss, {"top1": jnp.mean(losses.topk_correct(outputs, labels, 1))}

  def eval_step(self, apply_fn, batch, axis_name):
    """psum'd float32 sums `loss_sum`, `top1_sum`, `top5_sum`, `count` of the real examples."""
    logits = apply_fn(windows.fold(batch["inputs"], self.eval_windows)).astype(jnp.float32)
    if self.eval_windows:
      probs = windows.average(jax.nn.softmax(logits), self.eval_windows)
      logits = jnp.log(jnp.maximum(probs, 1e-30))  # the cross-entropy of the averaged probs
    sums = losses.classification_metric_sums(logits, batch["labels"], batch["mask"])
    return jax.lax.psum(sums, axis_name)

  def evaluator(self) -> base.SumsEvaluator:
    return base.SumsEvaluator(
      {"loss_sum": "eval/loss", "top1_sum": "eval/top1", "top5_sum": "eval/top5"}
    )
