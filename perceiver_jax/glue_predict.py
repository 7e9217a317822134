"""Writes a fine-tuned model's GLUE test-set predictions in the benchmark's submission format.

  python -m perceiver_jax.glue_predict --config=configs/glue.py:task=sst2 \
      --config.data.data_dir=/data/glue_data --workdir=workdirs/glue_sst2 --output_dir=submit

Loads the newest checkpoint of `--workdir` (the run of the same `--config`), reads
`data_dir/<DIR>/test*.tsv` and writes `output_dir/<NAME>.tsv`: a header `index\tprediction`,
then one line per test example, its id and the predicted label name (classification) or
score (STS-B, clipped to [0, 5]). NAME is the task's folder, with MNLI's two test splits as
MNLI-m and MNLI-mm. An MNLI model also labels GLUE's diagnostic set, AX.tsv from
`data_dir/diagnostic/diagnostic.tsv`, when that file exists (the log says when it does not).

One process: it runs on this host's devices; under `jax.distributed` with several processes it
stops with an error (the test sets are small enough for one host).
"""

from __future__ import annotations

import os

import jax
import numpy as np
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from perceiver_jax import pretrained
from perceiver_jax.data import glue

_CONFIG = config_flags.DEFINE_config_file("config", None, "The fine-tuning run's config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "The fine-tuning run's directory.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where the <TASK>.tsv files go.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Examples per forward pass.")

_MNLI_NAMES = {"test_matched": "MNLI-m", "test_mismatched": "MNLI-mm"}


def predict_split(apply, split: glue.Split, batch_size: int) -> np.ndarray:
  """The model's outputs [N, K] for a split's ids [N, L], in batches of `batch_size` (the last
  batch padded with PAD rows, so that every call has one shape)."""
  outputs = []
  for start in range(0, len(split.ids), batch_size):
    ids = split.ids[start : start + batch_size]
    padded = np.zeros((batch_size, ids.shape[1]), np.int32)
    padded[: len(ids)] = ids
    outputs.append(np.asarray(apply(padded))[: len(ids)])
  return np.concatenate(outputs) if outputs else np.zeros((0, 1), np.float32)


def format_predictions(task: glue.GlueTask, outputs: np.ndarray) -> list[str]:
  """Prediction strings of outputs [N, K]: label names, or scores in [0, 5] for regression."""
  if task.is_regression:
    return [f"{score:.3f}" for score in np.clip(outputs[:, 0], 0.0, 5.0)]
  return [task.labels[k] for k in np.argmax(outputs, axis=-1)]


def write_submission(path: str, index: list[str], predictions: list[str]) -> None:
  """`index\\tprediction` then one line per example."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    f.write("index\tprediction\n")
    f.writelines(f"{i}\t{p}\n" for i, p in zip(index, predictions, strict=True))


def write_predictions(config, workdir: str, output_dir: str, batch_size: int) -> list[str]:
  """Predicts every test split of `config.data.task` (and for MNLI the diagnostic set, when
  its file exists); returns the files written."""
  if jax.process_count() > 1:
    raise ValueError(
      f"glue_predict runs in one process, not {jax.process_count()}: run it on one host"
    )
  custom = config.data.custom  # the definition of task "custom" (data/glue.custom_task)
  task = glue.get_task(config.data.task, custom)
  forward, params, state = pretrained.load_trained_model(workdir, config.model)
  length = config.model.input_shape[0]

  @jax.jit
  def apply(ids):
    return forward.apply(params, state, None, ids, is_training=False)[0]

  data_dir = config.data.data_dir
  splits = {  # submission file stem -> test split
    _MNLI_NAMES.get(name, task.directory): glue.read_split(
      data_dir, config.data.task, name, length, custom
    )
    for name in task.test_splits
  }
  if config.data.task == "mnli":
    diagnostic = glue.diagnostic_path(data_dir)
    if os.path.isfile(diagnostic):
      splits["AX"] = glue.read_diagnostic(data_dir, length)
    else:
      logging.warning("No GLUE diagnostic file %s: AX.tsv is not written", diagnostic)
  written = []
  for name, split in splits.items():
    outputs = predict_split(apply, split, batch_size)
    path = os.path.join(output_dir, f"{name}.tsv")
    write_submission(path, split.index, format_predictions(task, outputs))
    written.append(path)
  return written


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  for flag in (_WORKDIR, _OUTPUT_DIR):
    if not flag.value:
      raise app.UsageError(f"--{flag.name} is required")
  for path in write_predictions(
    _CONFIG.value, _WORKDIR.value, _OUTPUT_DIR.value, _BATCH_SIZE.value
  ):
    print(path)


if __name__ == "__main__":
  app.run(main)
