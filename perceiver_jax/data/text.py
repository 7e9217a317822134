"""Plain UTF-8 text files as masked-language-modelling batches of byte ids (`config.data.name =
"text"`).

Files: `config.data.train_files` / `eval_files`, or when a list is empty every file of
`data_dir/train` / `data_dir/eval` (sorted by name). With `one_document_per="line"` each line
is a document (the newline is dropped), with `"file"` each file is one. Bad input is counted,
logged and skipped, never fatal mid-run: an empty file, an empty (or all-whitespace) document,
and a document that is not valid UTF-8 (skipped whole rather than decoded with replacement
characters, so the model never learns U+FFFD as text). Documents of any length are kept: an
example only ever reads the window it crops.

Example (L = the model's input length, D = `docs_per_example`): D documents, each followed by
SEP, concatenated; a window of L bytes at a random offset (offset 0 when shorter, then PAD
up to L); whole-word (or single-byte) masking (`mlm_masking.py`). Batches follow the contract:
  "inputs"  int32 [*prefix, L]    masked ids (PAD = 0 is padding);
  "labels"  {"ids": int32 [*prefix, L] original ids, "weights": float32 [*prefix, L] 1 at the
            bytes to predict};
  "mask"    (evaluation) float32 [*prefix].
Training order: `contract.TrainOrder` over documents with a global batch of B * D documents, so
an epoch's shuffled documents are cut into runs of D consecutive ones; the run in example slot
j of step k is documents [j * D, (j + 1) * D) of the step's batch, and its crop and masking draw
from `TrainOrder.rng(AUGMENT_STREAM, k, j)`. An epoch is floor(N / (B * D)) steps. Evaluation
example e is held-out documents [e * D, (e + 1) * D) in file order, cropped and masked with a
generator seeded by e alone, so every run (any seed, any process count) evaluates the same bytes.
"""

from __future__ import annotations

import dataclasses
import glob
import itertools
import os
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Sequence

import ml_collections
import numpy as np
from absl import logging

from perceiver_jax.data import bytes_tokenizer as bt
from perceiver_jax.data import contract
from perceiver_jax.data import mlm_masking

DOCUMENT_UNITS = ("line", "file")
# Seeds evaluation examples: default_rng((EVAL_STREAM, e)).
EVAL_STREAM = 7


@dataclasses.dataclass(frozen=True)
class Documents:
  """Documents as one byte buffer: document i is `data[offsets[i]:offsets[i + 1]]` (UTF-8).

  Attributes:
    data: uint8 [total_bytes].
    offsets: int64 [N + 1].
    skipped: {reason: count} of what was left out ("empty_files", "empty_documents",
      "invalid_utf8").
  """

  data: np.ndarray
  offsets: np.ndarray
  skipped: dict[str, int]

  def __len__(self) -> int:
    return len(self.offsets) - 1

  def lengths(self, indices: np.ndarray) -> np.ndarray:
    return self.offsets[np.asarray(indices) + 1] - self.offsets[np.asarray(indices)]


def read_documents(files: Sequence[str], one_document_per: str) -> Documents:
  """The documents of `files`, in file order (see the module docstring for what is skipped)."""
  if one_document_per not in DOCUMENT_UNITS:
    raise ValueError(
      f"config.data.one_document_per={one_document_per!r}: expected one of {DOCUMENT_UNITS}"
    )
  skipped = {"empty_files": 0, "empty_documents": 0, "invalid_utf8": 0}
  kept = []
  for path in files:
    with open(path, "rb") as f:
      content = f.read()
    if not content:
      skipped["empty_files"] += 1
      continue
    for doc in content.split(b"\n") if one_document_per == "line" else [content]:
      reason = skip_reason(doc)
      if reason:
        skipped[reason] += 1
      else:
        kept.append(doc)
  return join_documents(kept, skipped)


def skip_reason(doc: bytes) -> str | None:
  """Why a document is left out ("empty_documents", "invalid_utf8"), or None to keep it."""
  if not doc.strip():
    return "empty_documents"
  try:
    doc.decode("utf-8")
  except UnicodeDecodeError:
    return "invalid_utf8"
  return None


def join_documents(docs: Sequence[bytes], skipped: dict[str, int]) -> Documents:
  """`Documents` holding `docs` (already checked with `skip_reason`) in order."""
  offsets = np.cumsum([0] + [len(doc) for doc in docs], dtype=np.int64)
  return Documents(np.frombuffer(b"".join(docs), np.uint8), offsets, skipped)


def crop_ids(docs: Documents, indices: Sequence[int], length: int, rng: np.random.Generator):
  """int32 [length]: documents `indices`, each followed by SEP, cropped at a random offset
  (uniform over the windows that fit, 0 when they are shorter) and padded with PAD.

  Only the bytes inside the window are read, so a document may be arbitrarily long.
  """
  indices = np.asarray(indices)
  sizes = docs.lengths(indices) + 1  # + SEP
  total = int(sizes.sum())
  start = int(rng.integers(0, total - length + 1)) if total > length else 0
  out = np.full(length, bt.PAD, np.int32)
  first = np.concatenate([[0], np.cumsum(sizes)[:-1]])  # position of each document's start
  for doc, pos, size in zip(indices, first, sizes, strict=True):
    lo, hi = max(start, pos), min(start + length, pos + size)
    if lo >= hi:
      continue
    piece = np.full(hi - lo, bt.SEP, np.int32)
    text_end = min(hi, pos + size - 1)  # the last position, pos + size - 1, is the SEP
    if text_end > lo:
      base = docs.offsets[doc] - pos
      piece[: text_end - lo] = docs.data[base + lo : base + text_end].astype(np.int32) + bt.OFFSET
    out[lo - start : hi - start] = piece
  return out


def make_example(docs, indices, length, rng, masking) -> dict:
  """One example: {"inputs": int32 [L], "labels": {"ids": int32 [L], "weights": f32 [L]}}."""
  ids = crop_ids(docs, indices, length, rng)
  inputs, weights = mlm_masking.mask_sequence(ids, rng, masking)
  return {"inputs": inputs, "labels": {"ids": ids, "weights": weights}}


def stack(examples: list[dict]) -> dict:
  """Examples ([L] leaves) -> a batch ([len(examples), L] leaves)."""
  return {
    "inputs": np.stack([e["inputs"] for e in examples]),
    "labels": {key: np.stack([e["labels"][key] for e in examples]) for key in ("ids", "weights")},
  }


def split_files(cfg: ml_collections.ConfigDict, split: str) -> list[str]:
  """The files of `split` ("train" or "eval"): the explicit list, else data_dir/<split>/*."""
  files = list(cfg[f"{split}_files"])
  if not files:
    if not cfg.data_dir:
      raise ValueError(f"config.data.data_dir is empty and so is config.data.{split}_files")
    files = sorted(
      p for p in glob.glob(os.path.join(cfg.data_dir, split, "*")) if os.path.isfile(p)
    )
    if not files:
      raise ValueError(f"config.data.data_dir={cfg.data_dir!r}: no files in {split}/")
  return files


def _load(cfg, split: str) -> Documents:
  docs = read_documents(split_files(cfg, split), cfg.one_document_per)
  logging.info("text %s: %d documents, %d bytes", split, len(docs), len(docs.data))
  if any(docs.skipped.values()):
    logging.warning("text %s: skipped %s", split, docs.skipped)
  return docs


def model_length(facts: contract.ModelFacts) -> int:
  """L, the model's input length; ValueError unless the model takes byte ids [L]."""
  if not isinstance(facts.input_shapes, tuple) or len(facts.input_shapes) != 1:
    raise ValueError(f"text: the model must take byte ids [L], not {facts.input_shapes}")
  return facts.input_shapes[0]


def masking_config(cfg: ml_collections.ConfigDict) -> mlm_masking.MaskingConfig:
  """The masking fields of `config.data`, checked."""
  return mlm_masking.MaskingConfig(
    cfg.mask_rate, cfg.mask_token_fraction, cfg.random_byte_fraction, cfg.mask_unit
  )


def docs_per_example(cfg: ml_collections.ConfigDict) -> int:
  if cfg.docs_per_example < 1:
    raise ValueError(f"config.data.docs_per_example={cfg.docs_per_example!r}: must be at least 1")
  return cfg.docs_per_example


def make_data(
  config: ml_collections.ConfigDict,
  facts: contract.ModelFacts,
  *,
  process_index: int,
  process_count: int,
) -> contract.Data:
  """`contract.Data` of the text files of `config.data` (see the module docstring)."""
  cfg = config.data
  length = model_length(facts)
  masking = masking_config(cfg)
  per_example = docs_per_example(cfg)
  train, test = _load(cfg, "train"), _load(cfg, "eval")
  if len(train) < config.batch_size * per_example:
    raise ValueError(
      f"text: {len(train)} training documents, fewer than batch_size={config.batch_size} x "
      f"docs_per_example={per_example}"
    )
  order = contract.TrainOrder(
    len(train), config.batch_size * per_example, config.seed, process_index, process_count
  )
  local = config.batch_size // process_count

  def train_step_batch(step: int) -> dict:
    runs = order.local_indices(step).reshape(local, per_example)
    return stack(
      [
        make_example(
          train,
          run,
          length,
          order.rng(contract.AUGMENT_STREAM, step, process_index * local + i),
          masking,
        )
        for i, run in enumerate(runs)
      ]
    )

  def eval_example(e: int) -> dict:
    run = np.arange(e * per_example, min((e + 1) * per_example, len(test)))
    return make_example(test, run, length, eval_rng(e), masking)

  return mlm_data(
    config,
    process_index,
    process_count,
    num_train=len(train) // per_example,
    num_eval=-(-len(test) // per_example),
    train_step_batch=train_step_batch,
    eval_example=eval_example,
  )


def eval_rng(e: int) -> np.random.Generator:
  """The generator of evaluation example `e`: the same for every run and process count."""
  return np.random.default_rng((EVAL_STREAM, e))


def mlm_data(
  config: ml_collections.ConfigDict,
  process_index: int,
  process_count: int,
  *,
  num_train: int,
  num_eval: int,
  train_step_batch: Callable[[int], dict],
  eval_example: Callable[[int], dict],
) -> contract.Data:
  """`contract.Data` from this process's training batch of a step and from evaluation examples.

  Args:
    train_step_batch: step -> this process's examples of it, stacked ([local, L] leaves).
    eval_example: e in [0, num_eval) -> evaluation example e ([L] leaves).
  """

  def train_batches(start_step: int, prefix: contract.Prefix) -> Iterator[dict]:
    contract.check_start_step(start_step)
    _, prefix = contract.local_shape(config.batch_size, process_count, prefix)
    return (contract.to_prefix(train_step_batch(s), prefix) for s in itertools.count(start_step))

  def eval_batches(prefix: contract.Prefix) -> Iterator[dict]:
    eval_local, prefix = contract.local_shape(config.eval_batch_size, process_count, prefix)
    indices = contract.padded_eval_indices(num_eval, eval_local, process_index, process_count)
    for start in range(0, len(indices), eval_local):
      rows = indices[start : start + eval_local]
      batch = stack([eval_example(max(int(e), 0)) for e in rows])
      batch["labels"]["weights"] *= (rows >= 0)[:, None]  # padding rows predict nothing
      batch["mask"] = (rows >= 0).astype(np.float32)
      yield contract.to_prefix(batch, prefix)

  first = train_step_batch(0)  # step 0, the first slot of this process
  example = {
    "inputs": first["inputs"][:1],
    "labels": {key: value[:1] for key, value in first["labels"].items()},
  }
  return contract.Data(num_train, num_eval, train_batches, eval_batches, example)
