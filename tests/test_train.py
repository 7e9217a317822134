"""End-to-end tests of perceiver_jax/train.py on tiny Fashion-MNIST-format files."""

import dataclasses
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tiny_training

from perceiver_jax import model as model_lib
from perceiver_jax import tasks
from perceiver_jax import train
from perceiver_jax.data import datasets
from perceiver_jax.data import pipeline
from perceiver_jax.tasks import average_precision


def _config(data_dir, **overrides):
  defaults = dict(total_steps=6, log_every_steps=1, eval_every_steps=3, checkpoint_every_steps=3)
  return tiny_training.tiny_config(data_dir, **{**defaults, **overrides})


def _read_jsonl(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def test_two_step_run_writes_metrics_config_and_checkpoint(data_dir, tmp_path):
  config = _config(data_dir, total_steps=2, eval_every_steps=2, checkpoint_every_steps=2)
  state = train.train_and_evaluate(config, str(tmp_path))
  assert int(state.step) == 2
  lines = _read_jsonl(tmp_path / "metrics.jsonl")
  train_lines = [m for m in lines if "train/loss" in m]
  assert [m["step"] for m in train_lines] == [1, 2]
  for key in ("train/loss", "train/learning_rate", "train/grad_norm", "train/param_norm"):
    assert np.isfinite(train_lines[-1][key])
  eval_line = [m for m in lines if "eval/top1" in m][-1]
  assert eval_line["step"] == 2 and eval_line["eval/count"] == 24  # every test image once
  assert json.loads((tmp_path / "config.json").read_text())["total_steps"] == 2
  assert (tmp_path / "checkpoints" / "2").is_dir()
  assert os.listdir(tmp_path / "tensorboard")
  final = json.loads((tmp_path / "final.json").read_text())
  assert final["step"] == 2 and final["eval/top1"] == eval_line["eval/top1"]
  assert final["eval/count"] == 24 and final["seconds"] > 0


def test_resume_after_interruption_is_bit_identical(data_dir, tmp_path, monkeypatch):
  uninterrupted = train.train_and_evaluate(_config(data_dir), str(tmp_path / "a"))

  class Killed(Exception):
    pass

  real_prefetch = pipeline.prefetch

  def dying_prefetch(iterator, size=2):
    for i, batch in enumerate(real_prefetch(iterator, size)):
      if i == 4:  # the checkpoint of step 3 exists; step 5 never runs
        raise Killed()
      yield batch

  monkeypatch.setattr(pipeline, "prefetch", dying_prefetch)
  with pytest.raises(Killed):
    train.train_and_evaluate(_config(data_dir), str(tmp_path / "b"))
  assert not (tmp_path / "b" / "final.json").exists()  # unfinished
  monkeypatch.setattr(pipeline, "prefetch", real_prefetch)
  resumed = train.train_and_evaluate(_config(data_dir), str(tmp_path / "b"))

  assert int(resumed.step) == int(uninterrupted.step) == 6
  for a, b in zip(jax.tree.leaves(uninterrupted), jax.tree.leaves(resumed), strict=True):
    np.testing.assert_array_equal(a, b)
  steps = [m["step"] for m in _read_jsonl(tmp_path / "b" / "metrics.jsonl") if "train/loss" in m]
  assert steps == [1, 2, 3, 4, 5, 6]  # no step logged twice
  assert json.loads((tmp_path / "b" / "final.json").read_text())["step"] == 6


def test_extending_a_finished_run_resumes_and_refinalises(data_dir, tmp_path):
  train.train_and_evaluate(_config(data_dir, total_steps=3), str(tmp_path))
  assert json.loads((tmp_path / "final.json").read_text())["step"] == 3
  # Rerunning the finished command trains nothing and keeps the marker.
  again = train.train_and_evaluate(_config(data_dir, total_steps=3), str(tmp_path))
  assert int(again.step) == 3
  assert json.loads((tmp_path / "final.json").read_text())["step"] == 3
  longer = train.train_and_evaluate(_config(data_dir, total_steps=6), str(tmp_path))
  assert int(longer.step) == 6
  assert json.loads((tmp_path / "final.json").read_text())["step"] == 6


@pytest.mark.parametrize(
  "field, value, message",
  [
    ("batch_size", 0, "config.batch_size=0: must be a positive multiple"),
    ("eval_every_steps", 0, "config.eval_every_steps=0: must be at least 1"),
    ("task.label_smoothing", 1.0, "config.task.label_smoothing=1.0: must be in"),
    ("task.name", "ranking", "config.task.name='ranking': expected one of"),
  ],
)
def test_validation_names_field_and_value(data_dir, field, value, message):
  config = _config(data_dir)
  section, _, name = field.rpartition(".")
  (config[section] if section else config)[name] = value
  with pytest.raises(ValueError, match=message):
    train.validate_config(config)


def test_non_finite_loss_stops_the_run_naming_the_step(data_dir, tmp_path):
  config = _config(data_dir)
  config.optimizer.learning_rate = 1e30
  config.optimizer.clip_global_norm = 0.0
  with pytest.raises(FloatingPointError, match=r"^non-finite .* step \d+$"):
    train.train_and_evaluate(config, str(tmp_path))
  assert not (tmp_path / "final.json").exists()
  checkpoints = tmp_path / "checkpoints"
  assert not checkpoints.exists() or not any(p.name.isdigit() for p in checkpoints.iterdir())


def _main_command(data_dir, workdir, total_steps):
  return [
    sys.executable,
    "-m",
    "perceiver_jax.main",
    "--config=configs/fashion_mnist.py:runlocal",
    f"--workdir={workdir}",
    f"--config.data.data_dir={data_dir}",
    f"--config.total_steps={total_steps}",
    "--config.batch_size=16",
    "--config.eval_batch_size=16",
    "--config.log_every_steps=1",
    "--config.checkpoint_every_steps=2",
    "--config.eval_every_steps=1000",
  ]


def test_sigkill_then_restart_ends_bit_identical(data_dir, tmp_path):
  """`kill -9` a real run after its first checkpoint, rerun the same command: the
  result equals an uninterrupted run (same seed, same device count)."""
  import signal
  import subprocess
  import time

  steps = 30
  config = _config(data_dir, total_steps=steps, checkpoint_every_steps=2, eval_every_steps=1000)
  uninterrupted = train.train_and_evaluate(config, str(tmp_path / "a"))

  repo = os.path.join(os.path.dirname(__file__), "..")
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}  # the same 8 CPU devices as this process
  victim = subprocess.Popen(
    _main_command(data_dir, tmp_path / "b", steps), cwd=repo, env=env, stderr=subprocess.DEVNULL
  )
  ckpt_dir = tmp_path / "b" / "checkpoints"
  deadline = time.time() + 240
  while time.time() < deadline and victim.poll() is None:
    if ckpt_dir.exists() and any(p.name.isdigit() for p in ckpt_dir.iterdir()):
      break
    time.sleep(0.02)
  victim.send_signal(signal.SIGKILL)
  victim.wait()
  assert victim.returncode == -signal.SIGKILL
  lines = _read_jsonl(tmp_path / "b" / "metrics.jsonl")
  assert max(m["step"] for m in lines) < steps  # it really died mid-run

  resumed = train.train_and_evaluate(config, str(tmp_path / "b"))
  for a, b in zip(jax.tree.leaves(uninterrupted), jax.tree.leaves(resumed), strict=True):
    np.testing.assert_array_equal(a, b)


def _load_in_memory(monkeypatch, train_set, test_set):
  """Makes the trainer load these numpy splits, whatever `config.data` says."""

  def load(config, facts, *, process_index, process_count):
    return pipeline.in_memory_data(
      config,
      facts,
      train_set,
      test_set,
      prepare=lambda batch: batch,
      process_index=process_index,
      process_count=process_count,
    )

  monkeypatch.setattr(datasets, "load", load)


def test_multi_label_windowed_evaluation_reports_map(data_dir, tmp_path, monkeypatch):
  """A multi-label dataset whose eval inputs carry 3 windows: the trainer trains with sigmoid
  cross-entropy and reports the mAP of the window-averaged sigmoid scores."""
  rng = np.random.default_rng(0)
  num_classes, windows = 10, 3
  train_set = {
    "inputs": rng.normal(size=(32, 28, 28, 1)).astype(np.float32),
    "labels": (rng.random((32, num_classes)) < 0.3).astype(np.float32),
  }
  test_set = {
    "inputs": rng.normal(size=(12, windows, 28, 28, 1)).astype(np.float32),
    "labels": (rng.random((12, num_classes)) < 0.3).astype(np.float32),
  }
  _load_in_memory(monkeypatch, train_set, test_set)
  config = _config(data_dir, total_steps=2, eval_every_steps=2)
  config.task = tasks.default_config("multi_label")
  config.task.eval_windows = windows
  state = train.train_and_evaluate(config, str(tmp_path))
  final = json.loads((tmp_path / "final.json").read_text())
  assert final["eval/count"] == 12 and "eval/top1" not in final
  train_keys = {k for m in _read_jsonl(tmp_path / "metrics.jsonl") for k in m if "train/" in k}
  assert "train/top1" not in train_keys and "train/loss" in train_keys

  forward = model_lib.build_model(config.model)
  flat = test_set["inputs"].reshape(12 * windows, 28, 28, 1)
  logits, _ = forward.apply(state.params, state.state, None, flat, is_training=False)
  scores = jax.nn.sigmoid(np.asarray(logits)).reshape(12, windows, num_classes).mean(axis=1)
  expected = average_precision.mean_average_precision(np.asarray(scores), test_set["labels"])
  np.testing.assert_allclose(final["eval/mAP"], expected, rtol=1e-5)
  probs = np.clip(np.asarray(scores, np.float64), 1e-7, 1 - 1e-7)
  labels = test_set["labels"]
  bce = -(labels * np.log(probs) + (1 - labels) * np.log(1 - probs)).mean()
  np.testing.assert_allclose(final["eval/loss"], bce, rtol=1e-4)


@dataclasses.dataclass(frozen=True)
class _SquaredError(tasks.Task):
  """A task the trainer has never heard of: regress `scale` times the one-hot label."""

  NAME = "squared_error"

  scale: float = 1.0

  def _per_example(self, outputs, labels):
    targets = self.scale * jax.nn.one_hot(labels, outputs.shape[-1])
    return jnp.mean((outputs.astype(jnp.float32) - targets) ** 2, axis=-1)

  def loss(self, outputs, batch):
    return jnp.mean(self._per_example(outputs, batch["labels"])), {"max": jnp.max(outputs)}

  def eval_step(self, apply_fn, batch, axis_name):
    error = self._per_example(apply_fn(batch["inputs"]), batch["labels"])
    sums = {"error": jnp.sum(batch["mask"] * error), "count": jnp.sum(batch["mask"])}
    return jax.lax.psum(sums, axis_name)

  def evaluator(self):
    return _MeanEvaluator()


class _MeanEvaluator:
  def __init__(self):
    self.error, self.count = 0.0, 0.0

  def add(self, step_outputs, batch):
    self.error += float(step_outputs["error"][0])
    self.count += float(step_outputs["count"][0])

  def result(self):
    return {"eval/mse": self.error / self.count, "eval/count": self.count}


def test_a_new_task_trains_without_touching_the_trainer(data_dir, tmp_path, monkeypatch):
  rng = np.random.default_rng(1)
  train_set = {
    "inputs": rng.normal(size=(32, 28, 28, 1)).astype(np.float32),
    "labels": rng.integers(0, 10, 32).astype(np.int32),
  }
  test_set = {
    "inputs": rng.normal(size=(20, 28, 28, 1)).astype(np.float32),
    "labels": rng.integers(0, 10, 20).astype(np.int32),
  }
  _load_in_memory(monkeypatch, train_set, test_set)
  monkeypatch.setitem(tasks.TASKS, _SquaredError.NAME, _SquaredError)
  config = _config(data_dir, total_steps=2, eval_every_steps=2)
  config.task = tasks.default_config("squared_error")
  config.task.scale = 0.5
  state = train.train_and_evaluate(config, str(tmp_path))

  lines = _read_jsonl(tmp_path / "metrics.jsonl")
  train_line = [m for m in lines if "train/loss" in m][-1]
  assert {"train/max", "train/grad_norm"} <= set(train_line) and "train/top1" not in train_line
  final = json.loads((tmp_path / "final.json").read_text())
  forward = model_lib.build_model(config.model)
  outputs, _ = forward.apply(state.params, state.state, None, test_set["inputs"], is_training=False)
  targets = 0.5 * np.eye(10)[test_set["labels"]]
  expected = np.mean((np.asarray(outputs, np.float64) - targets) ** 2)
  assert final["eval/count"] == 20  # 24 rows evaluated, 4 of them padding
  np.testing.assert_allclose(final["eval/mse"], expected, rtol=1e-5)
