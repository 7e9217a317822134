"""Masked language modelling: cross-entropy and accuracy over the bytes chosen for prediction.

Outputs are float32 logits [B, L, V] over the byte vocabulary. Labels are a dict:
  "ids"      int32 [B, L]: the original ids of the (unmasked) sequence;
  "weights"  float32 [B, L]: 1 at the positions chosen for prediction, 0 elsewhere.
Every metric is a mean over predicted bytes (not over sequences), so a sequence with many
masked words counts more than one with few. Evaluation adds weighted sums over batches and
devices and divides once: `eval/loss`, `eval/masked_accuracy`, `eval/count` (predicted bytes).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from perceiver_jax.tasks import base


def masked_sums(logits: jax.Array, ids: jax.Array, weights: jax.Array) -> dict[str, jax.Array]:
  """Weighted sums over the predicted positions.

  Args:
    logits: [..., L, V] float.
    ids: [..., L] int target ids.
    weights: [..., L] float, 1 where a byte is predicted (0 elsewhere, padding included).
  Returns:
    float32 scalars `loss_sum` (sum of w * cross-entropy), `correct_sum` (sum of w * [argmax
    == id]) and `count` (sum of w).
  """
  logits = logits.astype(jnp.float32)
  weights = weights.astype(jnp.float32)
  log_probs = jax.nn.log_softmax(logits)  # [..., L, V]
  nll = -jnp.take_along_axis(log_probs, ids[..., None].astype(jnp.int32), axis=-1)[..., 0]
  correct = (jnp.argmax(logits, axis=-1) == ids).astype(jnp.float32)
  return {
    "loss_sum": jnp.sum(weights * nll),
    "correct_sum": jnp.sum(weights * correct),
    "count": jnp.sum(weights),
  }


@dataclasses.dataclass(frozen=True)
class MaskedLM(base.Task):
  """No fields besides `name`: the masking itself is the data's (`config.data`)."""

  NAME = "masked_lm"

  def loss(self, outputs, batch):
    labels = batch["labels"]
    sums = masked_sums(outputs, labels["ids"], labels["weights"])
    count = jnp.maximum(sums["count"], 1.0)  # a batch with nothing to predict has loss 0
    return sums["loss_sum"] / count, {"masked_accuracy": sums["correct_sum"] / count}

  def eval_step(self, apply_fn, batch, axis_name):
    """psum'd float32 `loss_sum`, `correct_sum`, `count` over the real examples' bytes."""
    labels = batch["labels"]
    logits = apply_fn(batch["inputs"])  # [b, L, V]
    # Padding rows of the last batch carry mask 0: none of their bytes count.
    weights = labels["weights"] * batch["mask"][:, None]
    return jax.lax.psum(masked_sums(logits, labels["ids"], weights), axis_name)

  def evaluator(self) -> base.SumsEvaluator:
    return base.SumsEvaluator({"loss_sum": "eval/loss", "correct_sum": "eval/masked_accuracy"})
