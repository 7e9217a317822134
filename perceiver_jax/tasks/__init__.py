"""Tasks: what a model's outputs mean (loss, training metrics, evaluation), chosen by
`config.task.name`.

Adding a task is one module here (a `base.Task` subclass) plus its entry in `TASKS`; the
trainer (perceiver_jax/train.py, train_step.py) knows no task by name.
"""

from __future__ import annotations

import ml_collections

from perceiver_jax.tasks import autoencoding
from perceiver_jax.tasks import base
from perceiver_jax.tasks import classification
from perceiver_jax.tasks import flow
from perceiver_jax.tasks import glue
from perceiver_jax.tasks import masked_lm
from perceiver_jax.tasks import multi_label

Task = base.Task
Evaluator = base.Evaluator

# name -> Task subclass.
TASKS: dict[str, type[Task]] = {
  task.NAME: task
  for task in (
    classification.Classification,
    multi_label.MultiLabel,
    masked_lm.MaskedLM,
    glue.Glue,
    flow.Flow,
    autoencoding.MultimodalAutoencoding,
  )
}


def _task_class(name: str) -> type[Task]:
  if name not in TASKS:
    raise ValueError(f"config.task.name={name!r}: expected one of {sorted(TASKS)}")
  return TASKS[name]


def default_config(name: str) -> ml_collections.ConfigDict:
  """The `config.task` section of task `name`, every field at its default."""
  return _task_class(name).default_config()


def get(task_cfg: ml_collections.ConfigDict) -> Task:
  """The task of a `config.task` section, validated (one-line ValueError naming the field)."""
  return _task_class(task_cfg.name).from_config(task_cfg)
