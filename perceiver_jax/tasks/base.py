"""The task interface: what the model's outputs mean, how they are trained and evaluated.

A task is a frozen dataclass whose fields are its config section (`config.task`, plus `name`).
The trainer calls, in this order:
  `model_kwargs(batch)`          extra keyword arguments of the model's forward pass;
  `loss(outputs, batch)`         under `pmap` and `jax.value_and_grad`, per device;
  `eval_step(apply_fn, batch, axis_name)`  under `pmap`, the outputs of one evaluation batch;
  `evaluator()`                  a fresh host-side reducer of those outputs over a split.
Batches are dicts of arrays `[per_device, ...]` inside `pmap` (see perceiver_jax/train_step.py);
evaluation batches carry `mask` [b], 0 on the padding rows that fill the last batch.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable
from collections.abc import Mapping
from typing import Any
from typing import Protocol

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

Batch = Mapping[str, Any]
ApplyFn = Callable[..., Any]  # apply_fn(inputs, **model_kwargs) -> outputs, is_training=False


def fail(field: str, value, message: str):
  """Raises the one-line error of an impossible `config.task.<field>` setting."""
  raise ValueError(f"config.task.{field}={value!r}: {message}")


class Evaluator(Protocol):
  """Reduces the outputs of every evaluation batch of a split to its metrics, on the host."""

  def add(self, step_outputs: Any, batch: Batch) -> None:
    """Takes one `eval_step` result ([local_devices, ...] arrays) and its numpy batch."""

  def result(self) -> dict[str, float]:
    """`{"eval/<metric>": value}` over the whole split (all processes), each example once."""


@dataclasses.dataclass(frozen=True)
class Task(abc.ABC):
  """A task; subclasses declare their config fields as dataclass fields with defaults.

  Attributes:
    eval_windows: W > 0: each evaluation example is W windows `[b, W, ...]` whose predictions
      are averaged (the data layer is told W); 0: one input per example.
  """

  NAME = ""  # the `config.task.name` that selects the task

  @property
  def eval_windows(self) -> int:
    return 0

  @classmethod
  def default_config(cls) -> ml_collections.ConfigDict:
    """`config.task` for this task: its name and every field at its default."""
    fields = {f.name: f.default for f in dataclasses.fields(cls)}
    return ml_collections.ConfigDict(dict(name=cls.NAME, **fields))

  @classmethod
  def from_config(cls, task_cfg: ml_collections.ConfigDict) -> Task:
    """The task of a `config.task` section; ValueError naming a missing or unknown field."""
    expected = set(cls.default_config())
    unknown, missing = sorted(set(task_cfg) - expected), sorted(expected - set(task_cfg))
    if unknown:
      fail(unknown[0], task_cfg[unknown[0]], f"not a field of task {cls.NAME!r}")
    if missing:
      raise ValueError(f"config.task.{missing[0]}: missing (task {cls.NAME!r} needs it)")
    return cls(**{f.name: task_cfg[f.name] for f in dataclasses.fields(cls)})

  def model_kwargs(self, batch: Batch) -> dict[str, Any]:
    """Keyword arguments of the forward pass taken from the batch (e.g. `subsampled_points`)."""
    del batch
    return {}

  @abc.abstractmethod
  def loss(self, outputs: Any, batch: Batch) -> tuple[jax.Array, dict[str, jax.Array]]:
    """(float32 scalar loss to minimise, {metric name: per-device mean}) for a training batch.

    Runs inside `jax.value_and_grad` under `pmap`; the trainer pmeans the loss and the metrics
    and logs them as `train/loss` and `train/<name>`.
    """

  @abc.abstractmethod
  def eval_step(self, apply_fn: ApplyFn, batch: Batch, axis_name: str) -> Any:
    """The outputs of one evaluation batch, under `pmap` over `axis_name`; `apply_fn` runs the
    model with `is_training=False` (it may be called several times, e.g. once per tile)."""

  @abc.abstractmethod
  def evaluator(self) -> Evaluator:
    """A fresh reducer for one pass over an evaluation split."""


def real_rows(step_outputs: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """The rows of real examples: `step_outputs` [devices, b, ...] -> [n_real, ...] by `mask`."""
  step_outputs = np.asarray(step_outputs)
  real = np.asarray(mask).reshape(-1) > 0
  return step_outputs.reshape(real.shape[0], *step_outputs.shape[2:])[real]


class SumsEvaluator:
  """Adds the (already device-summed) sums of every batch and divides each by the total
  `count` once, so a split is counted exactly once whatever its padding.

  `metrics` maps each sum's key in the step outputs to its metric name, e.g.
  {"loss_sum": "eval/loss"}; `eval/count` reports the count itself.
  """

  def __init__(self, metrics: Mapping[str, str]):
    self._metrics = dict(metrics)
    self._totals = dict.fromkeys([*self._metrics, "count"], 0.0)

  def add(self, step_outputs: Any, batch: Batch) -> None:
    del batch  # the sums already exclude the padding rows
    for key in self._totals:
      self._totals[key] += float(step_outputs[key][0])  # every device holds the same psum

  def result(self) -> dict[str, float]:
    count = max(self._totals["count"], 1.0)
    result = {name: self._totals[key] / count for key, name in self._metrics.items()}
    return {**result, "eval/count": self._totals["count"]}


def allgather_rows(rows: np.ndarray) -> np.ndarray:
  """Every process's rows [n_p, ...] -> [n_0 + n_1 + ..., ...] in process order, on every
  process. The n_p may differ (a split's shards do when its size is not a multiple of the
  process count): each process pads its rows to the largest n_p for the gather, which needs
  one shape everywhere, and the padding is cut off again."""
  rows = np.asarray(rows)
  if jax.process_count() == 1:
    return rows
  counts = multihost_utils.process_allgather(np.int64(len(rows)))  # [P]
  padded = np.zeros((int(counts.max()), *rows.shape[1:]), rows.dtype)
  padded[: len(rows)] = rows
  gathered = multihost_utils.process_allgather(padded)  # [P, max n_p, ...]
  return np.concatenate([block[:count] for block, count in zip(gathered, counts, strict=True)])
