"""Tests for perceiver_jax/tasks/masked_lm.py: the loss and metrics against numpy, and the
evaluator over pmapped batches with padding rows."""

import jax
import numpy as np

from perceiver_jax import tasks

DEVICES = 4  # conftest.py forces 8 CPU devices
L, V = 5, 7


def _np_sums(logits, ids, weights):
  """(sum w * ce, sum w * correct, sum w) in float64."""
  logits = np.asarray(logits, np.float64)
  shifted = logits - logits.max(-1, keepdims=True)
  log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
  ce = -np.take_along_axis(log_probs, ids[..., None], axis=-1)[..., 0]
  correct = (logits.argmax(-1) == ids).astype(np.float64)
  return (weights * ce).sum(), (weights * correct).sum(), weights.sum()


def _batch(rng, n):
  logits = rng.normal(size=(n, L, V)).astype(np.float32)
  ids = rng.integers(0, V, size=(n, L)).astype(np.int32)
  weights = (rng.random((n, L)) < 0.4).astype(np.float32)
  return logits, ids, weights


def test_registered_with_only_a_name():
  assert tasks.default_config("masked_lm").to_dict() == {"name": "masked_lm"}


def test_loss_and_accuracy_are_means_over_predicted_bytes():
  rng = np.random.default_rng(0)
  logits, ids, weights = _batch(rng, 3)
  # Make some predictions right so the accuracy is not trivially 0.
  ids[0] = logits[0].argmax(-1)
  weights[0, :2] = 1.0
  task = tasks.get(tasks.default_config("masked_lm"))
  loss, metrics = task.loss(logits, {"inputs": ids, "labels": {"ids": ids, "weights": weights}})
  loss_sum, correct_sum, count = _np_sums(logits, ids, weights)
  np.testing.assert_allclose(float(loss), loss_sum / count, rtol=1e-5)
  np.testing.assert_allclose(float(metrics["masked_accuracy"]), correct_sum / count, rtol=1e-6)
  assert 0 < float(metrics["masked_accuracy"]) < 1
  # Nothing to predict: loss and accuracy 0, no division by zero.
  loss, metrics = task.loss(logits, {"labels": {"ids": ids, "weights": 0 * weights}})
  assert float(loss) == 0.0 and float(metrics["masked_accuracy"]) == 0.0


def test_evaluation_counts_each_real_byte_once():
  rng = np.random.default_rng(1)
  per_device, num_real = 2, 13
  padded = 16  # two batches of DEVICES * per_device; 3 padding rows in the last one
  logits, ids, weights = _batch(rng, padded)
  mask = (np.arange(padded) < num_real).astype(np.float32)
  task = tasks.get(tasks.default_config("masked_lm"))
  eval_step = jax.pmap(
    lambda batch: task.eval_step(lambda x: 2.0 * x, batch, "batch"),
    axis_name="batch",
    devices=jax.devices()[:DEVICES],
  )
  evaluator = task.evaluator()
  step = DEVICES * per_device
  for start in range(0, padded, step):
    rows = slice(start, start + step)
    batch = {
      "inputs": logits[rows],
      "labels": {"ids": ids[rows], "weights": weights[rows]},
      "mask": mask[rows],
    }
    batch = jax.tree.map(lambda x: x.reshape(DEVICES, per_device, *x.shape[1:]), batch)
    evaluator.add(eval_step(batch), batch)
  result = evaluator.result()
  loss_sum, correct_sum, count = _np_sums(
    2.0 * logits[:num_real], ids[:num_real], weights[:num_real]
  )
  assert result["eval/count"] == count
  np.testing.assert_allclose(result["eval/loss"], loss_sum / count, rtol=1e-5)
  np.testing.assert_allclose(result["eval/masked_accuracy"], correct_sum / count, rtol=1e-6)
