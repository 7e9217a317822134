"""The training loop: `train_and_evaluate(config, workdir) -> TrainState`.

One flat function, read top to bottom: validate the config, load the data, build
the model and optimizer, restore the newest checkpoint (or pretrained weights), then
run pmapped train steps, evaluating and checkpointing every N steps and at the end.
Rerunning with the same workdir resumes; with the same seed and device count the
result is bit-identical to an uninterrupted run on CPU.

The loop knows no dataset and no task: `config.task` names the task (perceiver_jax/tasks/:
loss, training metrics, evaluation) and `config.data` the dataset (perceiver_jax/data/).
Batches are `[local_devices, per_device, ...]`; parameters live replicated on the
devices during training and are unreplicated (device 0) for checkpoints.
"""

from __future__ import annotations

import os
import time

import jax
import ml_collections
import numpy as np
from absl import logging

from perceiver_jax import checkpointing
from perceiver_jax import metrics as metrics_lib
from perceiver_jax import model
from perceiver_jax import optimizer as optimizer_lib
from perceiver_jax import pretrained
from perceiver_jax import tasks
from perceiver_jax import train_step as ts
from perceiver_jax import workdir_lock
from perceiver_jax.data import datasets
from perceiver_jax.data import pipeline


def _fail(field: str, value, message: str):
  raise ValueError(f"config.{field}={value!r}: {message}")


def validate_config(config: ml_collections.ConfigDict) -> tasks.Task:
  """Fails early, with one line naming the field and its value, on impossible settings.

  Returns the task of `config.task` (validated with it).
  """
  model.validate_model_config(config.model)
  task = tasks.get(config.task)
  optimizer_lib.validate_optimizer_config(config.optimizer)
  if config.data.name not in datasets.DATASETS:
    _fail("data.name", config.data.name, f"expected one of {sorted(datasets.DATASETS)}")
  devices = jax.device_count()
  if config.batch_size < 1 or config.batch_size % devices:
    _fail("batch_size", config.batch_size, f"must be a positive multiple of the {devices} devices")
  if config.eval_batch_size < 1 or config.eval_batch_size % devices:
    _fail("eval_batch_size", config.eval_batch_size, f"must be a positive multiple of {devices}")
  if config.total_steps < 0 or (config.total_steps == 0 and not 0 < config.num_epochs < np.inf):
    _fail("num_epochs", config.num_epochs, "needs a finite num_epochs > 0 or total_steps > 0")
  for field in ("eval_every_steps", "checkpoint_every_steps", "keep_checkpoints"):
    if config[field] < 1:
      _fail(field, config[field], "must be at least 1")
  return task


def _total_steps(config, num_train_examples: int) -> tuple[int, int]:
  steps_per_epoch = max(1, num_train_examples // config.batch_size)
  total = config.total_steps or int(round(config.num_epochs * steps_per_epoch))
  return total, steps_per_epoch


def _device_shape(global_batch_size: int) -> tuple[int, int]:
  """This process's share of a global batch as [local_devices, per_device]."""
  local_devices = jax.local_device_count()
  return local_devices, global_batch_size // jax.process_count() // local_devices


def _check_finite(step: int, train_metrics: dict) -> None:
  """Stops the run on a non-finite loss or parameters, naming the step (nothing is saved)."""
  loss = float(train_metrics["loss"][0])
  param_norm = float(train_metrics["param_norm"][0])
  if not np.isfinite(loss):
    raise FloatingPointError(f"non-finite training loss {loss} at step {step}")
  if not np.isfinite(param_norm):
    raise FloatingPointError(f"non-finite parameters (norm {param_norm}) after step {step}")


def _unreplicate(tree):
  return jax.tree.map(lambda x: np.asarray(x[0]), tree)


def evaluate(
  eval_step, params, model_state, data: datasets.Data, task: tasks.Task, eval_batch_size: int
) -> dict[str, float]:
  """The task's metrics over the whole evaluation split, each example counted once."""
  evaluator = task.evaluator()
  for batch in data.eval_batches(_device_shape(eval_batch_size)):
    evaluator.add(eval_step(params, model_state, batch), batch)
  return evaluator.result()


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> ts.TrainState:
  """Trains `config` in `workdir` (resuming if it holds checkpoints); returns the final state.

  Raises `workdir_lock.WorkdirInUseError` at once if another live run holds the workdir.
  """
  task = validate_config(config)
  os.makedirs(workdir, exist_ok=True)
  with workdir_lock.hold(workdir, enabled=jax.process_index() == 0):
    return _train(config, workdir, task)


def _train(config: ml_collections.ConfigDict, workdir: str, task: tasks.Task) -> ts.TrainState:
  is_chief = jax.process_index() == 0
  writer = metrics_lib.MetricWriter(workdir, enabled=is_chief)
  if is_chief:
    metrics_lib.write_config(workdir, config)

  facts = datasets.ModelFacts(
    model.input_shapes(config.model),
    config.model.num_classes,
    task.eval_windows,
    model.output_points(config.model),
  )
  data = datasets.load(
    config, facts, process_index=jax.process_index(), process_count=jax.process_count()
  )
  total_steps, steps_per_epoch = _total_steps(config, data.num_train_examples)
  schedule = optimizer_lib.learning_rate_schedule(
    config.optimizer,
    total_steps=total_steps,
    steps_per_epoch=steps_per_epoch,
    batch_size=config.batch_size,
  )
  tx = optimizer_lib.make_optimizer(config.optimizer, schedule)
  forward = model.build_model(config.model)

  example = data.example["inputs"]
  state = jax.jit(lambda rng: ts.init_train_state(forward, tx, rng, example))(
    jax.random.PRNGKey(config.seed)
  )
  checkpointer = checkpointing.Checkpointer(
    os.path.join(workdir, "checkpoints"),
    keep=config.keep_checkpoints,
    save_every_steps=config.checkpoint_every_steps,
  )
  restored = checkpointer.restore_latest(state)
  if restored is not None:
    state = restored
    logging.info("Resumed from step %d in %s", int(state.step), workdir)
    writer.truncate_after(int(state.step))
  elif config.pretrained.path:
    params, model_state = pretrained.load_pretrained(
      config.pretrained.path,
      state.params,
      state.state,
      exclude=tuple(config.pretrained.exclude),
      exclude_head=config.pretrained.exclude_head,
    )
    state = state._replace(params=params, state=model_state, opt_state=tx.init(params))
  start_step = int(state.step)

  train_iter = pipeline.prefetch(data.train_batches(start_step, _device_shape(config.batch_size)))
  p_train_step = jax.pmap(
    ts.make_train_step(forward, tx, schedule, task), axis_name=ts.AXIS, donate_argnums=(0,)
  )
  p_eval_step = jax.pmap(ts.make_eval_step(forward, task), axis_name=ts.AXIS)

  def evaluate_test_split(state: ts.TrainState) -> dict[str, float]:
    return evaluate(p_eval_step, state.params, state.state, data, task, config.eval_batch_size)

  state = ts.replicate(state, jax.local_device_count())
  final_path = os.path.join(workdir, metrics_lib.FINAL_FILE)
  if is_chief and start_step < total_steps and os.path.exists(final_path):
    os.remove(final_path)  # a longer run resumes from a finished one: it is no longer final
  progress = metrics_lib.ProgressLogger(total_steps, start_step=start_step)
  guard = checkpointing.PreemptionGuard()
  started = time.monotonic()
  step = start_step
  unchecked = None  # (step, metrics) of a step whose loss has not been read back yet
  eval_metrics = {}
  try:
    while step < total_steps:
      state, train_metrics = p_train_step(state, next(train_iter))
      step += 1
      # Reading a result blocks until its step is done, so the previous step is checked after
      # this one is queued (the device never waits for the host), and this step too before
      # anything that logs, evaluates or saves its state.
      if unchecked is not None:
        _check_finite(*unchecked)
      unchecked = (step, train_metrics)
      rates = progress.update(step, config.batch_size)
      is_last = step == total_steps
      do_log = step % config.log_every_steps == 0 or is_last or rates is not None
      do_eval = step % config.eval_every_steps == 0 or is_last
      do_save = step % config.checkpoint_every_steps == 0 or is_last or guard.requested
      if do_log or do_eval or do_save:
        _check_finite(*unchecked)
        unchecked = None
      if do_log:
        scalars = {f"train/{k}": float(v[0]) for k, v in train_metrics.items()}
        writer.write_scalars(step, {**scalars, **(rates or {})})
      if do_eval:
        eval_metrics = evaluate_test_split(state)
        writer.write_scalars(step, eval_metrics)
      if do_save:
        checkpointer.save(step, _unreplicate(state), force=True)
      if guard.requested:
        logging.warning("SIGTERM: saved the checkpoint of step %d; stopping.", step)
        break
  finally:
    guard.close()
    checkpointer.close()
    writer.close()
  if step == total_steps:
    if not eval_metrics:
      # The loop evaluates at the last step, so this is a rerun that had nothing left to train.
      # Every process evaluates (a collective): only process 0 knows whether final.json exists.
      eval_metrics = evaluate_test_split(state)
    if is_chief and (start_step < total_steps or not os.path.exists(final_path)):
      seconds = round(time.monotonic() - started, 1)
      metrics_lib.write_final(workdir, step, eval_metrics, seconds=seconds)
  return _unreplicate(state)
