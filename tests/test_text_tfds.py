"""Tests for perceiver_jax/data/text_tfds.py: two tiny TFDS text datasets in array_record (a
"c4"-like and a "wikipedia"-like one, bad documents included) mixed 70/30, and 2 training steps
of `python -m perceiver_jax.main --config=configs/mlm.py:runlocal` on them."""

import json
import math

import main_runner
import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from perceiver_jax.data import bytes_tokenizer as bt
from perceiver_jax.data import contract
from perceiver_jax.data import datasets
from perceiver_jax.data import text_tfds

NUM_C4, NUM_C4_EVAL, NUM_WIKI = 60, 7, 30
C4 = ("tiny_c4", 0.7, "text")
WIKI = ("tiny_wikipedia", 0.3, "text")
FACTS = contract.ModelFacts(input_shapes=(64,), num_classes=bt.VOCAB_SIZE)


def write_text_dataset(name: str, splits: dict, data_dir: str) -> None:
  """Writes TFDS dataset `name` (features "text", "title") in array_record under data_dir;
  `splits` maps a split to its documents (str, or bytes written as they are)."""
  with tfds.core.registered.skip_registration():

    class TextDataset(tfds.core.GeneratorBasedBuilder):
      VERSION = tfds.core.Version("1.0.0")
      code_path = None  # no metadata files next to a module

      def _info(self):
        features = {"text": tfds.features.Text(), "title": tfds.features.Text()}
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features))

      def _split_generators(self, dl_manager):
        del dl_manager
        return {split: self._generate_examples(docs) for split, docs in splits.items()}

      def _generate_examples(self, docs):
        for i, doc in enumerate(docs):
          yield i, {"text": doc, "title": f"{name} {i}"}

    TextDataset.name = name
  TextDataset(data_dir=data_dir, file_format="array_record").download_and_prepare()


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  c4 = [f"c4 page {i} " + "alpha beta " * (3 + i % 5) for i in range(NUM_C4 + NUM_C4_EVAL)]
  write_text_dataset("tiny_c4", {"train": c4[:NUM_C4], "validation": c4[NUM_C4:]}, data_dir)
  wiki = [f"wiki article {i} " + "gamma delta " * (3 + i % 4) for i in range(NUM_WIKI)]
  write_text_dataset("tiny_wikipedia", {"train": wiki + [b"caf\xe9 latin-1", "  "]}, data_dir)
  return data_dir


def _config(data_dir, batch_size=8, seed=0, sources=(C4, WIKI)):
  return ml_collections.ConfigDict(
    dict(
      seed=seed,
      batch_size=batch_size,
      eval_batch_size=4,
      data=dict(
        name="text_tfds",
        docs_per_example=2,
        mask_unit="word",
        mask_rate=0.15,
        mask_token_fraction=0.8,
        random_byte_fraction=0.1,
        tfds_sources=sources,
        tfds_train_split="train",
        tfds_eval=("tiny_c4", "validation", "text"),
        tfds_num_eval_examples=0,
        tfds_data_dir=data_dir,
      ),
    )
  )


def _mixture(data_dir, batch_size=8, seed=0, process_index=0, process_count=1):
  sources = [text_tfds.Source(name, "train", "text", data_dir) for name, _, _ in (C4, WIKI)]
  num_train = (NUM_C4 + NUM_WIKI + 2) // 2
  order = contract.TrainOrder(num_train, batch_size, seed, process_index, process_count)
  return text_tfds.Mixture(sources, np.array([0.7, 0.3]), order, 2)


def _train(data, start_step, steps, prefix=(8,)):
  it = data.train_batches(start_step, prefix)
  return [next(it) for _ in range(steps)]


def _source_of(ids) -> int:
  """0 for "c4" text, 1 for "wikipedia" text, judged by the words of the example."""
  content = bt.decode(ids[ids >= bt.OFFSET])
  c4 = any(w in content for w in ("alpha", "beta", "c4 page"))
  wiki = any(w in content for w in ("gamma", "delta", "wiki"))
  assert c4 != wiki, content
  return int(wiki)


def test_mixture_follows_the_weights_and_reads_without_replacement(tfds_dir):
  mixture = _mixture(tfds_dir)
  sources = np.concatenate([mixture.slot_sources(step) for step in range(400)])  # 3,200 slots
  assert abs(np.mean(sources == 0) - 0.7) < 0.03  # 3 standard deviations is 0.024
  # Counts before a step are the sum of the slots of the earlier steps, across blocks too.
  np.testing.assert_array_equal(mixture.counts_before(400), np.bincount(sources, minlength=2))
  far = text_tfds.BLOCK_STEPS + 5
  later = sum(np.bincount(mixture.slot_sources(s), minlength=2) for s in range(far))
  np.testing.assert_array_equal(mixture.counts_before(far), later)
  # Each pass over a source visits every document once, in a different order each pass.
  first = [mixture.document_index(0, p) for p in range(NUM_C4)]
  second = [mixture.document_index(0, p) for p in range(NUM_C4, 2 * NUM_C4)]
  assert sorted(first) == sorted(second) == list(range(NUM_C4)) and first != second


def test_bad_documents_are_skipped_and_counted(tfds_dir, caplog):
  mixture = _mixture(tfds_dir)
  wiki = mixture.sources[1]
  docs = [wiki.document(i) for i in range(len(wiki))]
  bad = {i for i, doc in enumerate(docs) if not doc.strip() or doc.startswith(b"caf")}
  assert len(bad) == 2
  seen = {"empty_documents": 0, "invalid_utf8": 0}
  for n in range(len(wiki) // 2):  # the first pass of the stream, and a little more
    run, skipped = mixture.run(1, n)
    assert len(run) == 2 and all(doc.startswith(b"wiki article") for doc in run)
    for reason, count in skipped.items():
      seen[reason] += count
  assert seen == {"empty_documents": 1, "invalid_utf8": 1}
  data = datasets.load(_config(tfds_dir), FACTS)
  with caplog.at_level("WARNING"):
    for batch in _train(data, 0, 20):
      assert all(
        b"\xe9" not in bytes(row[row >= bt.OFFSET] - bt.OFFSET) for row in batch["labels"]["ids"]
      )
  assert "skipped {'empty_documents': " in caplog.text


def test_batches_are_deterministic_resumable_and_sharded(tfds_dir):
  config = _config(tfds_dir)
  data = datasets.load(config, FACTS)
  assert data.num_train_examples == (NUM_C4 + NUM_WIKI + 2) // 2
  whole = _train(data, 0, 5)
  batch = whole[0]
  assert batch["inputs"].shape == (8, 64) and batch["inputs"].dtype == np.int32
  weights, ids = batch["labels"]["weights"], batch["labels"]["ids"]
  assert weights.sum() > 0 and (ids == bt.SEP).any()
  np.testing.assert_array_equal(batch["inputs"][weights == 0], ids[weights == 0])
  # Each example's text comes from the source its slot drew.
  mixture = _mixture(tfds_dir)
  for step in range(5):
    got = [_source_of(row) for row in whole[step]["labels"]["ids"]]
    assert got == mixture.slot_sources(step).tolist()
  # Recomputed, resumed at step 3 and split over two processes: the same batches.
  again = _train(datasets.load(config, FACTS), 0, 5)
  for a, b in zip(whole, again, strict=True):
    np.testing.assert_array_equal(a["inputs"], b["inputs"])
  resumed = _train(datasets.load(config, FACTS), 3, 2)
  np.testing.assert_array_equal(resumed[1]["labels"]["ids"], whole[4]["labels"]["ids"])
  halves = [datasets.load(config, FACTS, process_index=p, process_count=2) for p in range(2)]
  for step in (0, 4):
    joined = np.concatenate([_train(h, step, 1, (4,))[0]["inputs"] for h in halves])
    np.testing.assert_array_equal(joined, whole[step]["inputs"])
  other = datasets.load(_config(tfds_dir, seed=1), FACTS)
  assert not np.array_equal(_train(other, 0, 1)[0]["inputs"], whole[0]["inputs"])
  # Evaluation: C4's validation split, 7 documents in 4 examples, the same for every seed.
  batches = list(data.eval_batches((4,)))
  assert data.num_eval_examples == 4 and [b["mask"].tolist() for b in batches] == [[1] * 4]
  assert all(_source_of(row) == 0 for row in batches[0]["labels"]["ids"])
  np.testing.assert_array_equal(next(other.eval_batches((4,)))["inputs"], batches[0]["inputs"])


def test_configuration_errors(tfds_dir):
  missing = _config(tfds_dir, sources=(C4, ("no_such_corpus", 0.3, "text")))
  with pytest.raises(ValueError, match=f"^no TFDS 'no_such_corpus' dataset in {tfds_dir}/no_such"):
    datasets.load(missing, FACTS)
  with pytest.raises(ValueError, match=r"^feature 'body' is not in .*: it has \['text', 'title'\]"):
    datasets.load(_config(tfds_dir, sources=(("tiny_c4", 1.0, "body"),)), FACTS)
  with pytest.raises(ValueError, match=r"^config\.data\.tfds_sources=.*weight of 'tiny_c4'"):
    datasets.load(_config(tfds_dir, sources=(("tiny_c4", 0.0, "text"),)), FACTS)
  with pytest.raises(ValueError, match=r"^config\.data\.tfds_sources=\(\): name at least one"):
    datasets.load(_config(tfds_dir, sources=()), FACTS)
  no_split = _config(tfds_dir)
  no_split.data.tfds_eval = ("tiny_wikipedia", "validation", "text")
  with pytest.raises(ValueError, match=r"^split 'validation' is not in .*: it has \['train'\]"):
    datasets.load(no_split, FACTS)


def test_pretraining_runs_two_steps_on_tfds(tfds_dir, tmp_path):
  result = main_runner.run_main(
    "mlm.py:runlocal",
    tmp_path / "workdir",
    "--config.data.name=text_tfds",
    f"--config.data.tfds_data_dir={tfds_dir}",
    f"--config.data.tfds_sources=({C4!r}, {WIKI!r})",
    "--config.data.tfds_eval=('tiny_c4', 'validation', 'text')",
    "--config.data.docs_per_example=2",
    "--config.total_steps=2",
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert "tiny_wikipedia:train, 32 documents, weight 0.300" in result.stderr
  records = [json.loads(line) for line in (tmp_path / "workdir" / "metrics.jsonl").open()]
  train = next(r for r in records if "train/loss" in r)
  evaluation = next(r for r in records if "eval/loss" in r)
  assert math.isfinite(train["train/loss"]) and 0 <= train["train/masked_accuracy"] <= 1
  assert math.isfinite(evaluation["eval/loss"]) and evaluation["eval/count"] > 0
