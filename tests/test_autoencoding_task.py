"""Tests for perceiver_jax/tasks/autoencoding.py (task `multimodal_autoencoding`): the loss and
training metrics against numpy, and the chunked whole-clip evaluation against a numpy PSNR of
the whole reconstruction, with a fake model (inputs plus known noise) and with the tiny
`multimodal_testing` model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perceiver_jax import model
from perceiver_jax import registry
from perceiver_jax import tasks
from perceiver_jax import train_step

DEVICES = 2  # conftest.py forces 8 CPU devices
T, H, W = 2, 4, 4  # 32 pixels
SAMPLES, P = 48, 4  # 12 audio patches of 4 samples
CLASSES = 7


def _task(**fields):
  cfg = tasks.default_config("multimodal_autoencoding")
  for key, value in fields.items():
    cfg[key] = value
  return tasks.get(cfg)


def _np_log_softmax(logits):
  logits = np.asarray(logits, np.float64)
  shifted = logits - logits.max(-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def _np_psnr(error):
  """Per example, error [b, ...]: 10 log10(1 / MSE), in float64."""
  mse = np.mean(np.square(np.asarray(error, np.float64)).reshape(len(error), -1), axis=1)
  return 10 * np.log10(1 / mse)


def _training_batch(rng, batch, image_points, audio_points, samples_per_patch):
  pixels = np.stack([rng.choice(T * H * W, image_points, replace=False) for _ in range(batch)])
  patches = np.stack(
    [rng.choice(SAMPLES // samples_per_patch, audio_points, replace=False) for _ in range(batch)]
  )
  return {
    "inputs": {
      "image": rng.uniform(0, 1, (batch, T, H, W, 3)).astype(np.float32),
      "audio": rng.uniform(-1, 1, (batch, SAMPLES)).astype(np.float32),
    },
    "labels": {
      "class": rng.integers(0, CLASSES, batch).astype(np.int32),
      "image_points": pixels.astype(np.int32),
      "audio_points": patches.astype(np.int32),
    },
  }


def _np_terms(outputs, batch, samples_per_patch):
  """The reference: each decoded point against the input value it reconstructs."""
  b = len(batch["labels"]["class"])
  rows = np.arange(b)[:, None]
  pixels = batch["inputs"]["image"].reshape(b, T * H * W, 3)
  patches = batch["inputs"]["audio"].reshape(b, -1, samples_per_patch)
  image_error = outputs["image"] - pixels[rows, batch["labels"]["image_points"]]
  audio_error = outputs["audio"] - patches[rows, batch["labels"]["audio_points"]]
  log_probs = _np_log_softmax(outputs["label"])
  classes = batch["labels"]["class"]
  return {
    "image_l1": np.mean(np.abs(image_error)),
    "audio_l1": np.mean(np.abs(audio_error)),
    "label_ce": -np.mean(log_probs[np.arange(b), classes]),
    "top1": np.mean(np.argmax(outputs["label"], -1) == classes),
    "image_psnr": np.mean(_np_psnr(image_error)),
    "audio_psnr": np.mean(_np_psnr(audio_error)),
  }


@pytest.mark.parametrize("samples_per_patch", [4, 8])
def test_loss_and_metrics_against_numpy(samples_per_patch):
  rng = np.random.default_rng(samples_per_patch)
  batch = _training_batch(rng, 5, 9, 3, samples_per_patch)
  outputs = {
    "image": rng.uniform(0, 1, (5, 9, 3)).astype(np.float32),
    "audio": rng.uniform(-1, 1, (5, 3, samples_per_patch)).astype(np.float32),
    "label": 3 * rng.normal(size=(5, CLASSES)).astype(np.float32),
  }
  loss, metrics = _task().loss(jax.tree.map(jnp.asarray, outputs), batch)
  expected = _np_terms(outputs, batch, samples_per_patch)
  assert set(metrics) == set(expected)
  for key, value in expected.items():
    np.testing.assert_allclose(float(metrics[key]), value, rtol=1e-5, err_msg=key)
  paper = 0.03 * expected["image_l1"] + expected["audio_l1"] + 1e-4 * expected["label_ce"]
  np.testing.assert_allclose(float(loss), paper, rtol=1e-5)

  # Other weights weigh the same three terms; the metrics do not change.
  weighted, metrics = _task(image_weight=2.0, audio_weight=0.5, label_weight=0.25).loss(
    outputs, batch
  )
  terms = 2.0 * expected["image_l1"] + 0.5 * expected["audio_l1"] + 0.25 * expected["label_ce"]
  np.testing.assert_allclose(float(weighted), terms, rtol=1e-5)
  np.testing.assert_allclose(float(metrics["image_l1"]), expected["image_l1"], rtol=1e-5)
  only_audio, _ = _task(image_weight=0.0, audio_weight=1.0, label_weight=0.0).loss(outputs, batch)
  np.testing.assert_allclose(float(only_audio), expected["audio_l1"], rtol=1e-5)


def test_model_kwargs_pass_the_training_points():
  rng = np.random.default_rng(0)
  batch = _training_batch(rng, 2, 5, 2, P)
  kwargs = _task().model_kwargs(batch)
  assert set(kwargs) == {"subsampled_points"}
  points = kwargs["subsampled_points"]
  assert set(points) == {"image", "audio"}
  np.testing.assert_array_equal(points["image"], batch["labels"]["image_points"])
  np.testing.assert_array_equal(points["audio"], batch["labels"]["audio_points"])
  # Evaluation batches carry no points: the task decodes whole clips itself.
  assert _task().model_kwargs({"labels": {"class": batch["labels"]["class"]}}) == {}


def _fake_apply(inputs, *, subsampled_points):
  """A model that reconstructs its inputs plus the known noise in `inputs` (and returns the
  logits given there): image [b, O_i, 3], audio [b, O_a, P], label [b, K]."""
  b = inputs["image"].shape[0]
  pixels = (inputs["image"] + inputs["image_noise"]).reshape(b, -1, 3)
  patches = (inputs["audio"] + inputs["audio_noise"]).reshape(b, -1, P)
  return {
    "image": pixels[:, subsampled_points["image"]],
    "audio": patches[:, subsampled_points["audio"]],
    "label": inputs["logits"],
  }


def _eval_split(rng, num_real, num_rows):
  """`num_rows` rows of clips, noise and logits, the last `num_rows - num_real` padding
  (mask 0) with noise of 0.5, which would lower the PSNR a lot if they were counted."""
  level = np.where(np.arange(num_rows) < num_real, rng.uniform(0.01, 0.2, num_rows), 0.5)
  return {
    "inputs": {
      "image": rng.uniform(0, 1, (num_rows, T, H, W, 3)).astype(np.float32),
      "audio": rng.uniform(-1, 1, (num_rows, SAMPLES)).astype(np.float32),
      "label": np.zeros((num_rows, CLASSES), np.float32),  # unused by the fake model
      "image_noise": (
        level[:, None, None, None, None] * rng.normal(size=(num_rows, T, H, W, 3))
      ).astype(np.float32),
      "audio_noise": (level[:, None] * rng.normal(size=(num_rows, SAMPLES))).astype(np.float32),
      "logits": 2 * rng.normal(size=(num_rows, CLASSES)).astype(np.float32),
    },
    "labels": {"class": rng.integers(0, CLASSES, num_rows).astype(np.int32)},
    "mask": (np.arange(num_rows) < num_real).astype(np.float32),
  }


def _evaluate(task, split, apply_fn, per_device):
  """Runs `task.eval_step` pmapped over DEVICES in batches [DEVICES, per_device, ...]."""
  step = jax.pmap(
    lambda batch: task.eval_step(apply_fn, batch, "batch"),
    axis_name="batch",
    devices=jax.devices()[:DEVICES],
  )
  evaluator = task.evaluator()
  batch_size = DEVICES * per_device
  num_rows = len(split["mask"])
  for start in range(0, num_rows, batch_size):
    rows = jax.tree.map(lambda x, start=start: x[start : start + batch_size], split)
    batch = jax.tree.map(lambda x: x.reshape(DEVICES, per_device, *x.shape[1:]), rows)
    evaluator.add(step(batch), batch)
  return evaluator.result()


@pytest.mark.parametrize("eval_chunks", [1, 3, 5, 40])
def test_chunked_evaluation_scores_whole_clips_like_numpy(eval_chunks):
  """1 call; 3 (12 patches in 3 whole chunks, 32 pixels in 11 + 11 + 10); 5 (neither divides);
  40 (more chunks than points: the extra ones decode repeats, which are not counted)."""
  rng = np.random.default_rng(eval_chunks)
  num_real = 9  # two batches of 2 x 3, the second with 3 padding rows
  split = _eval_split(rng, num_real, 12)
  result = _evaluate(_task(eval_chunks=eval_chunks), split, _fake_apply, per_device=3)

  inputs, real = split["inputs"], slice(0, num_real)
  image_error = inputs["image_noise"][real]
  audio_error = inputs["audio_noise"][real]
  classes = split["labels"]["class"][real]
  log_probs = _np_log_softmax(inputs["logits"][real])
  ranks = (log_probs > log_probs[np.arange(num_real), classes][:, None]).sum(-1)
  ce = -log_probs[np.arange(num_real), classes]
  loss = (
    0.03 * np.abs(image_error).reshape(num_real, -1).mean(1)
    + np.abs(audio_error).reshape(num_real, -1).mean(1)
    + 1e-4 * ce
  )
  assert result["eval/count"] == num_real
  # PSNR per clip, then averaged: not the PSNR of the pooled error.
  per_clip = np.mean(_np_psnr(image_error))
  assert abs(per_clip - _np_psnr(image_error.reshape(1, -1))[0]) > 0.5
  np.testing.assert_allclose(result["eval/image_psnr"], per_clip, atol=1e-3)
  np.testing.assert_allclose(result["eval/audio_psnr"], np.mean(_np_psnr(audio_error)), atol=1e-3)
  assert result["eval/top1"] == pytest.approx(np.mean(ranks < 1))
  assert result["eval/top5"] == pytest.approx(np.mean(ranks < 5))
  assert 0 < result["eval/top5"] < 1
  np.testing.assert_allclose(result["eval/loss"], loss.mean(), rtol=1e-5)


def test_a_perfect_reconstruction_has_a_finite_psnr():
  split = _eval_split(np.random.default_rng(0), 2, 2)
  split["inputs"]["image_noise"][:] = 0.0
  result = _evaluate(_task(eval_chunks=2), split, _fake_apply, per_device=1)
  assert result["eval/image_psnr"] == pytest.approx(100.0)  # MSE floored at 1e-10
  assert 10 < result["eval/audio_psnr"] < 100


def test_evaluation_of_the_tiny_model_matches_its_whole_decoding():
  """The real model, evaluated in 3 chunks (1,024 pixels and 40 patches: neither divides),
  scores what numpy computes from one decoding of every point."""
  cfg = registry.get_model_config("multimodal_testing")
  forward = model.build_model(cfg)
  shapes, _ = model.param_shapes(cfg)
  rng = np.random.default_rng(0)
  # Random parameters of the model's shapes (a compiled init costs more than this test).
  params = {
    m: {
      k: (
        1.0 + 0.1 * rng.normal(size=s.shape) if k == "scale" else 0.2 * rng.normal(size=s.shape)
      ).astype(np.float32)
      for k, s in leaves.items()
    }
    for m, leaves in shapes.items()
  }
  b = 3
  classes = np.array([1, 4, 9])
  inputs = {
    "audio": (0.3 * rng.normal(size=(b, 640))).clip(-1, 1).astype(np.float32),
    "image": rng.uniform(0, 1, (b, 4, 16, 16, 3)).astype(np.float32),
    "label": np.eye(10, dtype=np.float32)[classes],
  }
  outputs, _ = jax.jit(forward.apply, static_argnames="is_training")(
    params, {}, None, inputs, is_training=False
  )
  image_error = np.asarray(outputs["image"]) - inputs["image"].reshape(b, -1, 3)
  audio_error = np.asarray(outputs["audio"]) - inputs["audio"].reshape(b, 40, 16)
  logits = np.asarray(outputs["label"])

  task = _task(eval_chunks=3)
  step = jax.pmap(
    train_step.make_eval_step(forward, task), axis_name=train_step.AXIS, devices=jax.devices()[:1]
  )
  batch = {
    "inputs": {k: v[None] for k, v in inputs.items()},
    "labels": {"class": classes[None].astype(np.int32)},
    "mask": np.array([[1.0, 1.0, 0.0]], np.float32),  # the third clip is padding
  }
  evaluator = task.evaluator()
  evaluator.add(step(jax.tree.map(lambda x: x[None], params), {}, batch), batch)
  result = evaluator.result()
  assert result["eval/count"] == 2
  np.testing.assert_allclose(result["eval/image_psnr"], _np_psnr(image_error)[:2].mean(), atol=1e-3)
  np.testing.assert_allclose(result["eval/audio_psnr"], _np_psnr(audio_error)[:2].mean(), atol=1e-3)
  assert result["eval/top1"] == pytest.approx(np.mean((np.argmax(logits, -1) == classes)[:2]))


@pytest.mark.parametrize(
  ("field", "value", "message"),
  [
    ("image_weight", -1.0, r"^config\.task\.image_weight=-1\.0: must be >= 0$"),
    ("audio_weight", -0.5, r"^config\.task\.audio_weight=-0\.5: must be >= 0$"),
    ("label_weight", -1e-4, r"^config\.task\.label_weight=-0\.0001: must be >= 0$"),
    ("eval_chunks", 0, r"^config\.task\.eval_chunks=0: must be at least 1$"),
  ],
)
def test_impossible_fields_are_one_line_errors(field, value, message):
  with pytest.raises(ValueError, match=message):
    _task(**{field: value})


def test_defaults_are_the_papers():
  assert tasks.default_config("multimodal_autoencoding").to_dict() == dict(
    name="multimodal_autoencoding",
    image_weight=0.03,
    audio_weight=1.0,
    label_weight=0.0001,
    eval_chunks=128,
  )
