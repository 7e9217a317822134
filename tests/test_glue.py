"""GLUE metrics, the `glue` task, the `sentence` decoder and loading an MLM checkpoint under it."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import scipy.stats

from configs import glue as glue_config
from perceiver_jax import model
from perceiver_jax import official_format
from perceiver_jax import pretrained
from perceiver_jax import registry
from perceiver_jax import tasks
from perceiver_jax.tasks import glue

PRED = np.array([1, 1, 0, 0, 1, 0, 1, 1])
LABELS = np.array([1, 0, 0, 1, 1, 0, 1, 0])  # tp 3, fp 2, tn 2, fn 1


def test_classification_metrics_on_known_counts():
  assert glue.accuracy(PRED, LABELS) == pytest.approx(5 / 8)
  precision, recall = 3 / 5, 3 / 4
  assert glue.f1(PRED, LABELS) == pytest.approx(2 * precision * recall / (precision + recall))
  mcc = (3 * 2 - 2 * 1) / np.sqrt((3 + 2) * (3 + 1) * (2 + 2) * (2 + 1))
  assert glue.matthews(PRED, LABELS) == pytest.approx(mcc)
  assert glue.matthews(np.ones(4), np.array([1, 0, 1, 0])) == 0.0  # undefined: 0
  assert glue.f1(np.zeros(4), np.array([1, 0, 1, 0])) == 0.0


def test_correlations_match_scipy_with_ties():
  rng = np.random.default_rng(0)
  x = rng.integers(0, 5, 50).astype(float)  # many ties
  y = x + rng.normal(size=50)
  assert glue.pearson(x, y) == pytest.approx(scipy.stats.pearsonr(x, y)[0])
  assert glue.spearman(x, y) == pytest.approx(scipy.stats.spearmanr(x, y)[0])
  np.testing.assert_allclose(glue._ranks([3.0, 1.0, 3.0, 2.0]), [3.5, 1, 3.5, 2])


def test_split_metrics_per_task():
  logits = np.eye(2)[PRED] * 3.0
  mrpc = glue.split_metrics("mrpc", logits, LABELS)
  assert set(mrpc) == {"eval/f1", "eval/accuracy", "eval/score", "eval/loss", "eval/count"}
  assert mrpc["eval/score"] == pytest.approx((mrpc["eval/f1"] + 5 / 8) / 2)
  log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  expected_loss = -np.mean(log_probs[np.arange(8), LABELS])
  assert mrpc["eval/loss"] == pytest.approx(expected_loss) and mrpc["eval/count"] == 8
  assert glue.split_metrics("cola", logits, LABELS)["eval/score"] == pytest.approx(
    glue.matthews(PRED, LABELS)
  )
  scores = np.array([0.5, 2.0, 4.0, 3.0])
  stsb = glue.split_metrics("stsb", scores[:, None], np.array([1.0, 2.0, 5.0, 2.5]))
  assert stsb["eval/loss"] == pytest.approx(np.mean([0.25, 0.0, 1.0, 0.25]))
  assert stsb["eval/spearman"] == pytest.approx(1.0)


def test_task_loss_and_evaluator():
  task = tasks.get(tasks.default_config("glue"))
  assert task.glue_task == "sst2" and not task.is_regression
  logits = jnp.asarray(np.eye(2)[PRED] * 3.0)
  loss, metrics = task.loss(logits, {"labels": jnp.asarray(LABELS)})
  assert np.isfinite(loss) and float(metrics["accuracy"]) == pytest.approx(5 / 8)
  stsb = tasks.get(ml_collections.ConfigDict({"name": "glue", "glue_task": "stsb"}))
  loss, _ = stsb.loss(jnp.array([[1.0], [3.0]]), {"labels": jnp.array([2.0, 3.0])})
  assert float(loss) == pytest.approx(0.5)
  # The evaluator keeps the real rows of [devices, b, K] outputs, over several batches.
  evaluator = task.evaluator()
  for half in (slice(0, 4), slice(4, 8)):
    outputs = {"outputs": np.asarray(logits)[half].reshape(2, 2, 2)}
    batch = {"labels": LABELS[half].reshape(2, 2), "mask": np.ones((2, 2))}
    evaluator.add(outputs, batch)
  padding = {"outputs": np.zeros((2, 2, 2)), "mask": np.zeros((2, 2))}
  evaluator.add(padding, {"labels": np.zeros((2, 2), np.int32), "mask": padding["mask"]})
  assert evaluator.result()["eval/accuracy"] == pytest.approx(5 / 8)
  assert evaluator.result()["eval/count"] == 8
  with pytest.raises(ValueError, match="config.task.glue_task='sts'"):
    tasks.get(ml_collections.ConfigDict({"name": "glue", "glue_task": "sts"}))


def test_sentence_decoder_outputs_and_released_size():
  cfg = glue_config.get_config("task=mnli,runlocal").model
  forward = model.build_model(cfg)
  ids = np.zeros((2, 64), np.int32)
  ids[:, :5] = [4, 70, 71, 5, 0]
  params, state = forward.init(jax.random.PRNGKey(0), ids, is_training=True)
  outputs, _ = forward.apply(params, state, None, ids, is_training=False)
  assert outputs.shape == (2, 3) and outputs.dtype == jnp.float32
  assert params["sentence_decoder/hidden"]["w"].shape == (32, 32)  # the query width
  # The released language model with this head: its MLM decoder (2,048 queries of 768 and
  # the 262 biases) replaced by 1 query, a 768 x 768 tanh layer and a 768 x 2 output.
  full = glue_config.get_config("task=sst2").model
  difference = 2048 * 768 + 262 - (768 + 768 * 768 + 768 + 768 * 2 + 2)
  assert model.count_params(model.param_shapes(full)[0]) == 201_108_230 - difference


def test_mlm_checkpoint_loads_under_the_sentence_decoder(tmp_path):
  mlm_cfg = registry.get_model_config("mlm_testing")
  mlm_params, _ = model.build_model(mlm_cfg).init(
    jax.random.PRNGKey(1), model.dummy_inputs(mlm_cfg), is_training=True
  )
  path = str(tmp_path / "mlm.pkl")
  official_format.save_official_pickle(path, jax.device_get(mlm_params), bare=True)
  cfg = glue_config.get_config("task=sst2,runlocal").model
  template, state = model.build_model(cfg).init(
    jax.random.PRNGKey(0), model.dummy_inputs(cfg), is_training=True
  )
  exclude = tuple(glue_config.get_config("task=sst2").pretrained.exclude)
  params, _ = pretrained.load_pretrained(path, template, state, exclude=exclude, exclude_head=True)
  np.testing.assert_array_equal(params["embed"]["embeddings"], mlm_params["embed"]["embeddings"])
  for module in template:
    source = template if module.startswith("sentence_decoder") else mlm_params
    for name in template[module]:
      np.testing.assert_array_equal(params[module][name], source[module][name])
  assert not any(m.startswith(("basic_decoder", "embedding_decoder")) for m in params)
  for prefixes, exclude_head in ((exclude, False), ((), True)):  # the MLM head, the new decoder
    with pytest.raises(official_format.CheckpointMismatchError):
      pretrained.load_pretrained(path, template, state, exclude=prefixes, exclude_head=exclude_head)
