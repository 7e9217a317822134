"""TFDS text datasets (C4, Wikipedia, ...) mixed by weight as masked-language-modelling batches
(`config.data.name = "text_tfds"`).

Sources: `config.data.tfds_sources` = ((name, weight, feature), ...), e.g. the paper's
(("c4/en:3.1.0", 0.7, "text"), ("wikipedia/20230601.en", 0.3, "text")), each read from split
`tfds_train_split` of the array_record files under `tfds_data_dir` (else $TFDS_DATA_DIR, else
~/tensorflow_datasets) through `tfds.data_source`: random access, no TensorFlow. Evaluation reads
`tfds_eval` = (name, split, feature), e.g. ("c4/en:3.1.0", "validation", "text") (English
Wikipedia has only a train split), its first `tfds_num_eval_examples` examples (0: all).

Examples are made as in text.py (D = `docs_per_example` documents joined with SEP, a window of
the model's L bytes, masking) and batches have its layout. Which documents, as a pure function
of (seed, step, slot) whatever the number of processes (`contract.TrainOrder` streams):
- the source of each slot: step k's count per source is multinomial(B, weights), drawn for
  blocks of BLOCK_STEPS steps at a time from the COUNT_STREAM generator of the block, and spread
  over the B slots by a permutation from the SOURCE_STREAM generator of step k. So every slot
  draws its source independently with the weights, and the number of examples a source gave
  before step k is a sum of counts (a resumed run needs no replay).
- the documents: the n-th example of source s reads the next D good documents of its stream
  from position n * D on. The stream visits source s's N_s documents in a new pseudo-random
  order each pass (grain's index_shuffle seeded from (seed, s, pass), so no permutation of C4's
  365M documents is held in memory): documents are read without replacement within a pass.
- a document that is empty or not valid UTF-8 (`text.skip_reason`) is skipped and counted (in
  the log, per step) and the stream's next document takes its place; more than MAX_SKIPS in one
  example is an error naming the source.
Evaluation example e is documents [e * D, (e + 1) * D) of the held-out split in record order
(bad ones left out and logged), cropped and masked with `text.eval_rng(e)`.
"""

from __future__ import annotations

import ml_collections
import numpy as np
from absl import logging
from grain.experimental import index_shuffle

from perceiver_jax.data import contract
from perceiver_jax.data import text
from perceiver_jax.data import tfds_split

# `TrainOrder.rng` streams of this module (contract.py's are 1 and 2, text.EVAL_STREAM is 7).
COUNT_STREAM = 3  # rng(COUNT_STREAM, block, 0): per-source counts of a block's steps
SOURCE_STREAM = 4  # rng(SOURCE_STREAM, step, 0): which slot gets which source
ORDER_STREAM = 5  # rng(ORDER_STREAM, pass, source): the seed of a source's pass
BLOCK_STEPS = 1024
MAX_SKIPS = 100


class Source:
  """One split of a TFDS text dataset: document i is the bytes of record i's `feature`."""

  def __init__(self, name: str, split: str, feature: str, data_dir: str):
    hint = f"prepare it with `tfds build {name} --file_format=array_record`"
    where, self.num_documents = tfds_split.check_split(name, split, data_dir, hint)
    self.name = f"{name}:{split}"
    self.feature = feature
    self._source = tfds_split.open_source(name, split, data_dir)
    features = self._source.dataset_info.features
    if feature not in features:
      raise ValueError(f"feature {feature!r} is not in {where}: it has {sorted(features)}")
    if self.num_documents < 1:
      raise ValueError(f"{where} split {split!r} has no records")

  def __len__(self) -> int:
    return self.num_documents

  def document(self, index: int) -> bytes:
    value = self._source[int(index)][self.feature]
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def _check_sources(entries) -> tuple[list[tuple[str, str]], np.ndarray]:
  """((name, feature) per source, float64 [S] weights summing to 1) of `tfds_sources`."""
  field = f"config.data.tfds_sources={tuple(entries)!r}"
  if not entries:
    raise ValueError(f"{field}: name at least one (name, weight, feature) source")
  names, weights = [], []
  for entry in entries:
    if len(entry) != 3 or not isinstance(entry[0], str) or not isinstance(entry[2], str):
      raise ValueError(f"{field}: each entry must be (name, weight, feature), not {entry!r}")
    if not entry[1] > 0:
      raise ValueError(f"{field}: the weight of {entry[0]!r} must be > 0")
    names.append((entry[0], entry[2]))
    weights.append(float(entry[1]))
  return names, np.asarray(weights) / sum(weights)


class Mixture:
  """The training documents of each (step, slot), drawn from weighted sources (module docstring).

  All randomness comes from `order`'s streams.
  """

  def __init__(self, sources: list, weights: np.ndarray, order: contract.TrainOrder, per_example):
    self.sources, self.weights, self.order = sources, weights, order
    self.per_example = per_example
    self._block_totals = [np.zeros(len(sources), np.int64)]  # counts before block b
    self._last_block = (-1, None)
    self._pass_seeds = {}

  def _block_counts(self, block: int) -> np.ndarray:
    """int64 [BLOCK_STEPS, S]: per-source counts of the block's steps."""
    if self._last_block[0] != block:
      rng = self.order.rng(COUNT_STREAM, block, 0)
      counts = rng.multinomial(self.order.batch_size, self.weights, size=BLOCK_STEPS)
      self._last_block = (block, counts)
    return self._last_block[1]

  def counts_before(self, step: int) -> np.ndarray:
    """int64 [S]: how many examples each source gave in steps [0, step)."""
    block, row = divmod(step, BLOCK_STEPS)
    while len(self._block_totals) <= block:
      done = len(self._block_totals) - 1
      self._block_totals.append(self._block_totals[-1] + self._block_counts(done).sum(0))
    return self._block_totals[block] + self._block_counts(block)[:row].sum(0)

  def slot_sources(self, step: int) -> np.ndarray:
    """int64 [B]: the source of every slot of global step `step`."""
    block, row = divmod(step, BLOCK_STEPS)
    counts = self._block_counts(block)[row]
    labels = np.repeat(np.arange(len(self.sources)), counts)
    return self.order.rng(SOURCE_STREAM, step, 0).permutation(labels)

  def document_index(self, source: int, position: int) -> int:
    """The document at `position` of source `source`'s stream (a new order every pass)."""
    size = len(self.sources[source])
    pass_, i = divmod(position, size)
    if (source, pass_) not in self._pass_seeds:
      rng = self.order.rng(ORDER_STREAM, pass_, source)
      self._pass_seeds[source, pass_] = int(rng.integers(2**31))
    seed = self._pass_seeds[source, pass_]
    return index_shuffle(i, max_index=size - 1, seed=seed, rounds=4)

  def step_runs(self, step: int) -> list[tuple[int, list[bytes], dict[str, int]]]:
    """(source, its D documents, {reason: skipped}) of each of this process's slots."""
    labels = self.slot_sources(step)
    before = self.counts_before(step)
    runs = []
    for slot in range(self.order.first_slot, self.order.first_slot + self.order.local):
      source = int(labels[slot])
      n = int(before[source] + np.sum(labels[:slot] == source))
      runs.append((source, *self.run(source, n)))
    return runs

  def run(self, source: int, n: int) -> tuple[list[bytes], dict[str, int]]:
    """The n-th example of `source`: its D good documents and {reason: skipped}."""
    skipped = {"empty_documents": 0, "invalid_utf8": 0}
    docs, position = [], n * self.per_example
    while len(docs) < self.per_example:
      doc = self.sources[source].document(self.document_index(source, position))
      position += 1
      reason = text.skip_reason(doc)
      if reason is None:
        docs.append(doc)
      elif sum(skipped.values()) == MAX_SKIPS:
        raise ValueError(f"{self.sources[source].name}: over {MAX_SKIPS} bad documents in a row")
      else:
        skipped[reason] += 1
    return docs, skipped


def _check_fields(cfg: ml_collections.ConfigDict) -> None:
  eval_spec = tuple(cfg.tfds_eval)
  if len(eval_spec) != 3 or not all(isinstance(x, str) and x for x in eval_spec):
    raise ValueError(f"config.data.tfds_eval={eval_spec!r}: expected (name, split, feature)")
  if cfg.tfds_num_eval_examples < 0:
    raise ValueError(
      f"config.data.tfds_num_eval_examples={cfg.tfds_num_eval_examples!r}: must be >= 0 (0: all)"
    )


def make_data(
  config: ml_collections.ConfigDict,
  facts: contract.ModelFacts,
  *,
  process_index: int,
  process_count: int,
) -> contract.Data:
  """`contract.Data` of the TFDS text mixture of `config.data` (see the module docstring)."""
  cfg = config.data
  length = text.model_length(facts)
  masking = text.masking_config(cfg)
  per_example = text.docs_per_example(cfg)
  names, weights = _check_sources(cfg.tfds_sources)
  _check_fields(cfg)
  sources = [
    Source(name, cfg.tfds_train_split, feature, cfg.tfds_data_dir) for name, feature in names
  ]
  eval_name, eval_split, eval_feature = cfg.tfds_eval
  test = Source(eval_name, eval_split, eval_feature, cfg.tfds_data_dir)
  for source, weight in zip(sources, weights, strict=True):
    logging.info("text_tfds: %s, %d documents, weight %.3f", source.name, len(source), weight)
  num_train = sum(len(s) for s in sources) // per_example
  order = contract.TrainOrder(
    num_train, config.batch_size, config.seed, process_index, process_count
  )
  mixture = Mixture(sources, weights, order, per_example)
  num_eval = -(-len(test) // per_example)
  if cfg.tfds_num_eval_examples:
    num_eval = min(num_eval, cfg.tfds_num_eval_examples)
  skipped_total = {"empty_documents": 0, "invalid_utf8": 0}

  def train_step_batch(step: int) -> dict:
    examples, skipped = [], dict.fromkeys(skipped_total, 0)
    for i, (_, docs, bad) in enumerate(mixture.step_runs(step)):
      run = text.join_documents(docs, bad)
      rng = order.rng(contract.AUGMENT_STREAM, step, order.first_slot + i)
      examples.append(text.make_example(run, np.arange(len(run)), length, rng, masking))
      for reason, count in bad.items():
        skipped[reason] += count
        skipped_total[reason] += count
    if any(skipped.values()):
      logging.warning(
        "text_tfds: step %d skipped %s, %s since this process began", step, skipped, skipped_total
      )
    return text.stack(examples)

  def eval_example(e: int) -> dict:
    docs = []
    for index in range(e * per_example, min((e + 1) * per_example, len(test))):
      doc = test.document(index)
      reason = text.skip_reason(doc)
      if reason:
        logging.warning(
          "text_tfds: %s record %d left out of evaluation: %s", test.name, index, reason
        )
      else:
        docs.append(doc)
    run = text.join_documents(docs or [b""], {})  # nothing left: an example of no bytes
    return text.make_example(run, np.arange(len(run)), length, text.eval_rng(e), masking)

  return text.mlm_data(
    config,
    process_index,
    process_count,
    num_train=num_train,
    num_eval=num_eval,
    train_step_batch=train_step_batch,
    eval_example=eval_example,
  )
