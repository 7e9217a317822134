"""The GLUE benchmark's tasks as byte-id batches for sentence classification and regression
(`config.data.name = "glue"`).

Files: GLUE's distribution layout, `data_dir/<DIR>/<split>.tsv` with DIR one of CoLA, SST-2,
MRPC, STS-B, QQP, MNLI, QNLI, RTE, WNLI (`config.data.task` is the lower-case task name, e.g.
"sst2", "stsb", "mnli"; or "custom", a classification set of one's own in the same layout,
defined by `config.data.custom`: see `custom_task`). Columns are read by header name,
except CoLA's train and dev files, which have no header (source, label, original label,
sentence). MNLI's dev and test splits are `dev_matched` / `dev_mismatched` and
`test_matched` / `test_mismatched`. A row with too few
columns or a label outside the task's list is counted, logged and skipped (QQP's train file
has a few). GLUE's diagnostic set (AX, unlabelled MNLI pairs) is
`data_dir/diagnostic/diagnostic.tsv` (`read_diagnostic`).

Example (L = the model's input length): one sentence is [CLS] s1 [SEP], a pair is
[CLS] s1 [SEP] s2 [SEP] (UTF-8 bytes through `bytes_tokenizer`), cropped at the end to L
(counted as "cropped") and padded with PAD. Batches follow the contract:
  "inputs"  int32 [*prefix, L] byte ids;
  "labels"  int32 [*prefix] index into the task's `labels`, or float32 [*prefix] the STS-B
            similarity score in [0, 5];
  "mask"    (evaluation) float32 [*prefix].
Training order: `contract.TrainOrder` over the train split (no augmentation). Evaluation reads
`config.data.eval_split` ("dev", or for MNLI "dev_matched" / "dev_mismatched") in file order.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Iterator

import ml_collections
import numpy as np
from absl import logging

from perceiver_jax.data import bytes_tokenizer as bt
from perceiver_jax.data import contract


@dataclasses.dataclass(frozen=True)
class GlueTask:
  """How one GLUE task is laid out on disk.

  Attributes:
    directory: its folder under data_dir, and the stem of its submission file.
    labels: the label names in class-id order; () for regression (STS-B).
    text_columns: header names of the sentence (and of the second sentence of a pair).
    label_column: header name of the label (train and dev).
    index_column: header name of the example id in the test file.
    dev_splits / test_splits: the file stems of the dev and test splits.
  """

  directory: str
  labels: tuple[str, ...]
  text_columns: tuple[str, ...]
  label_column: str
  index_column: str = "index"
  dev_splits: tuple[str, ...] = ("dev",)
  test_splits: tuple[str, ...] = ("test",)

  @property
  def is_regression(self) -> bool:
    return not self.labels

  @property
  def num_outputs(self) -> int:
    """Model outputs: the number of classes, or 1 score for regression."""
    return len(self.labels) or 1


_NLI = ("entailment", "not_entailment")
TASKS: dict[str, GlueTask] = {
  "cola": GlueTask("CoLA", ("0", "1"), ("sentence",), "label"),
  "sst2": GlueTask("SST-2", ("0", "1"), ("sentence",), "label"),
  "mrpc": GlueTask("MRPC", ("0", "1"), ("#1 String", "#2 String"), "Quality"),
  "stsb": GlueTask("STS-B", (), ("sentence1", "sentence2"), "score"),
  "qqp": GlueTask("QQP", ("0", "1"), ("question1", "question2"), "is_duplicate", "id"),
  "mnli": GlueTask(
    "MNLI",
    ("contradiction", "entailment", "neutral"),
    ("sentence1", "sentence2"),
    "gold_label",
    dev_splits=("dev_matched", "dev_mismatched"),
    test_splits=("test_matched", "test_mismatched"),
  ),
  "qnli": GlueTask("QNLI", _NLI, ("question", "sentence"), "label"),
  "rte": GlueTask("RTE", _NLI, ("sentence1", "sentence2"), "label"),
  "wnli": GlueTask("WNLI", ("0", "1"), ("sentence1", "sentence2"), "label"),
}
# CoLA's train and dev files have no header: source, label, original label, sentence.
_COLA_COLUMNS = ("source", "label", "original_label", "sentence")


# `config.data.task` of a user's own classification set in GLUE's layout (`custom_task`).
CUSTOM = "custom"


def get_task(name: str, custom: ml_collections.ConfigDict | None = None) -> GlueTask:
  """The GLUE task `name`, or for "custom" the task that `custom` (config.data.custom) defines."""
  if name == CUSTOM:
    return custom_task(custom)
  if name not in TASKS:
    raise ValueError(f"config.data.task={name!r}: expected {CUSTOM!r} or one of {sorted(TASKS)}")
  return TASKS[name]


def custom_task(custom: ml_collections.ConfigDict | None) -> GlueTask:
  """A single-sentence or sentence-pair classification set laid out as GLUE's are.

  `custom` (config.data.custom): `directory`, the folder under data_dir that holds train.tsv,
  dev.tsv and test.tsv, each with a header line; `labels`, the class names in class-id order
  (at least 2; a row whose label is not among them is skipped and counted); `text_columns`,
  the header names of the sentence (or of the two sentences of a pair); `label_column` (train
  and dev) and `index_column` (test). Metric: accuracy.
  """
  if custom is None:
    raise ValueError(f"config.data.task={CUSTOM!r} needs the section config.data.custom")
  labels = tuple(str(label) for label in custom.labels)
  texts = tuple(custom.text_columns)
  checks = (
    ("directory", custom.directory, bool(custom.directory), "must name a folder of data_dir"),
    ("labels", custom.labels, len(labels) >= 2, "needs at least 2 class names"),
    ("labels", custom.labels, len(set(labels)) == len(labels), "repeats a class name"),
    ("text_columns", custom.text_columns, len(texts) in (1, 2) and all(texts), "1 or 2 names"),
    ("label_column", custom.label_column, bool(custom.label_column), "must name a column"),
    ("index_column", custom.index_column, bool(custom.index_column), "must name a column"),
  )
  for field, value, ok, problem in checks:
    if not ok:
      raise ValueError(f"config.data.custom.{field}={value!r}: {problem}")
  return GlueTask(custom.directory, labels, texts, custom.label_column, custom.index_column)


def is_regression(name: str) -> bool:
  """Whether task `name` predicts a score (STS-B); custom tasks are classification."""
  return name != CUSTOM and get_task(name).is_regression


@dataclasses.dataclass(frozen=True)
class Split:
  """One split of a task, encoded.

  Attributes:
    ids: int32 [N, L] byte ids.
    labels: int32 [N] class ids, float32 [N] scores, or None (test split).
    index: the example ids of the file's index column (test), else row numbers, as strings.
    skipped: {reason: count}: "malformed" rows, "unknown_label" rows, "cropped" examples
      (kept, shortened to L).
  """

  ids: np.ndarray
  labels: np.ndarray | None
  index: list[str]
  skipped: dict[str, int]


def encode_example(texts: tuple[str, ...], length: int) -> tuple[np.ndarray, bool]:
  """(int32 [length] ids of [CLS] s1 [SEP] (s2 [SEP]), whether it was cropped)."""
  pieces = [np.array([bt.CLS], np.int32)]
  for text in texts:
    pieces += [bt.encode(text), np.array([bt.SEP], np.int32)]
  ids = np.concatenate(pieces)
  out = np.full(length, bt.PAD, np.int32)
  out[: min(length, len(ids))] = ids[:length]
  return out, len(ids) > length


def read_split(
  data_dir: str,
  task_name: str,
  split: str,
  length: int,
  custom: ml_collections.ConfigDict | None = None,
) -> Split:
  """Reads and encodes `data_dir/<DIR>/<split>.tsv`; the test splits carry no labels.
  `custom`: config.data.custom, the definition of task "custom" (see `custom_task`)."""
  task = get_task(task_name, custom)
  allowed = ("train", *task.dev_splits, *task.test_splits)
  if split not in allowed:
    raise ValueError(f"GLUE {task_name}: split {split!r} is not one of {allowed}")
  path = os.path.join(data_dir, task.directory, f"{split}.tsv")
  if not os.path.isfile(path):
    raise ValueError(f"GLUE {task_name}: no file {path}")
  is_test = split in task.test_splits
  headerless = task_name == "cola" and not is_test
  return read_file(path, task, length, is_test=is_test, headerless=headerless)


def diagnostic_path(data_dir: str) -> str:
  """GLUE's diagnostic set (AX): `data_dir/diagnostic/diagnostic.tsv`, columns `index`,
  `sentence1`, `sentence2`, no labels; an MNLI model labels it for the submission."""
  return os.path.join(data_dir, "diagnostic", "diagnostic.tsv")


def read_diagnostic(data_dir: str, length: int) -> Split:
  """Reads and encodes the diagnostic set (see `diagnostic_path`) as MNLI test pairs."""
  path = diagnostic_path(data_dir)
  if not os.path.isfile(path):
    raise ValueError(f"GLUE diagnostic: no file {path}")
  return read_file(path, get_task("mnli"), length, is_test=True, headerless=False)


def read_file(path: str, task: GlueTask, length: int, *, is_test: bool, headerless: bool) -> Split:
  """Reads and encodes one TSV file of `task`: a test file (`task.index_column` and no labels)
  or a labelled one; `headerless`: CoLA's columns by position."""
  with open(path, encoding="utf-8", errors="replace", newline="") as f:
    rows = [line.rstrip("\r\n").split("\t") for line in f if line.strip()]
  if headerless:
    header = _COLA_COLUMNS
  elif rows:
    header, rows = tuple(rows[0]), rows[1:]
  else:
    raise ValueError(f"{path}: empty file, expected a header line")
  wanted = (*task.text_columns, task.index_column if is_test else task.label_column)
  missing = [c for c in wanted if c not in header]
  if missing:
    raise ValueError(f"{path}: no column {missing[0]!r} in header {list(header)}")
  columns = [header.index(c) for c in wanted]
  skipped = {"malformed": 0, "unknown_label": 0, "cropped": 0}
  ids, labels, index = [], [], []
  for row_number, row in enumerate(rows):
    if len(row) <= max(columns):
      skipped["malformed"] += 1
      continue
    *texts, last = (row[c] for c in columns)
    if is_test:
      index.append(last)
    elif task.is_regression:
      try:
        labels.append(float(last))
      except ValueError:
        skipped["unknown_label"] += 1
        continue
    elif last in task.labels:
      labels.append(task.labels.index(last))
    else:
      skipped["unknown_label"] += 1
      continue
    if not is_test:
      index.append(str(row_number))
    example, cropped = encode_example(tuple(texts), length)
    skipped["cropped"] += cropped
    ids.append(example)
  label_array = None
  if not is_test:
    label_array = np.asarray(labels, np.float32 if task.is_regression else np.int32)
  stacked = np.stack(ids) if ids else np.zeros((0, length), np.int32)
  if any(skipped.values()):
    logging.warning("GLUE %s: %s", path, skipped)
  return Split(stacked, label_array, index, skipped)


def make_data(
  config: ml_collections.ConfigDict,
  facts: contract.ModelFacts,
  *,
  process_index: int,
  process_count: int,
) -> contract.Data:
  """`contract.Data` of the GLUE task `config.data.task` (see the module docstring)."""
  cfg = config.data
  task = get_task(cfg.task, cfg.custom)
  if not isinstance(facts.input_shapes, tuple) or len(facts.input_shapes) != 1:
    raise ValueError(f"glue: the model must take byte ids [L], not {facts.input_shapes}")
  if facts.num_classes != task.num_outputs:
    raise ValueError(
      f"glue {cfg.task}: the model has {facts.num_classes} outputs, the task needs "
      f"{task.num_outputs}"
    )
  if cfg.eval_split not in task.dev_splits:
    raise ValueError(
      f"config.data.eval_split={cfg.eval_split!r}: expected one of {task.dev_splits}"
    )
  (length,) = facts.input_shapes
  train = read_split(cfg.data_dir, cfg.task, "train", length, cfg.custom)
  dev = read_split(cfg.data_dir, cfg.task, cfg.eval_split, length, cfg.custom)
  logging.info(
    "GLUE %s: %d train, %d %s examples", cfg.task, len(train.ids), len(dev.ids), cfg.eval_split
  )
  order = contract.TrainOrder(
    len(train.ids), config.batch_size, config.seed, process_index, process_count
  )

  def train_batches(start_step: int, prefix: contract.Prefix) -> Iterator[dict]:
    contract.check_start_step(start_step)
    _, prefix = contract.local_shape(config.batch_size, process_count, prefix)
    for step in itertools.count(start_step):
      rows = order.local_indices(step)
      yield contract.to_prefix({"inputs": train.ids[rows], "labels": train.labels[rows]}, prefix)

  def eval_batches(prefix: contract.Prefix) -> Iterator[dict]:
    eval_local, prefix = contract.local_shape(config.eval_batch_size, process_count, prefix)
    indices = contract.padded_eval_indices(len(dev.ids), eval_local, process_index, process_count)
    for start in range(0, len(indices), eval_local):
      rows = indices[start : start + eval_local]
      real = np.maximum(rows, 0)
      batch = {
        "inputs": dev.ids[real],
        "labels": dev.labels[real],
        "mask": (rows >= 0).astype(np.float32),
      }
      yield contract.to_prefix(batch, prefix)

  example = {"inputs": train.ids[:1], "labels": train.labels[:1]}
  return contract.Data(len(train.ids), len(dev.ids), train_batches, eval_batches, example)
