"""Tests for perceiver_jax/data/text.py and mlm_masking.py: reading (bad input counted), the
crop against a naive concatenation, whole-word masking, and the contract's training order."""

import ml_collections
import numpy as np
import pytest

from perceiver_jax.data import bytes_tokenizer as bt
from perceiver_jax.data import contract
from perceiver_jax.data import datasets
from perceiver_jax.data import mlm_masking
from perceiver_jax.data import text

WORDS = "the quick brown fox jumps over a lazy dog while café owners sing".split()


def _write_corpus(root, num_train=40, num_eval=7):
  rng = np.random.default_rng(0)
  for split, n in (("train", num_train), ("eval", num_eval)):
    (root / split).mkdir(parents=True)
    lines = [" ".join(rng.choice(WORDS, rng.integers(3, 12))) for _ in range(n)]
    (root / split / "a.txt").write_text("\n".join(lines[: n // 2]) + "\n", encoding="utf-8")
    (root / split / "b.txt").write_text("\n".join(lines[n // 2 :]), encoding="utf-8")
  return root


def _config(data_dir, batch_size=4, docs_per_example=3, seed=0):
  return ml_collections.ConfigDict(
    dict(
      seed=seed,
      batch_size=batch_size,
      eval_batch_size=4,
      data=dict(
        name="text",
        data_dir=str(data_dir),
        train_files=(),
        eval_files=(),
        one_document_per="line",
        docs_per_example=docs_per_example,
        mask_rate=0.15,
        mask_token_fraction=0.8,
        random_byte_fraction=0.1,
        mask_unit="word",
      ),
    )
  )


FACTS = contract.ModelFacts(input_shapes=(32,), num_classes=bt.VOCAB_SIZE)


def test_reading_counts_and_skips_bad_input(tmp_path):
  (tmp_path / "empty.txt").write_bytes(b"")
  (tmp_path / "mixed.txt").write_bytes(b"caf\xc3\xa9 ok\n\n   \nbad \xff byte\nlast")
  files = [str(tmp_path / "empty.txt"), str(tmp_path / "mixed.txt")]
  docs = text.read_documents(files, "line")
  assert [
    bt.decode(docs.data[a:b] + bt.OFFSET)
    for a, b in zip(docs.offsets[:-1], docs.offsets[1:], strict=True)
  ] == [
    "café ok",
    "last",
  ]
  assert docs.skipped == {"empty_files": 1, "empty_documents": 2, "invalid_utf8": 1}
  whole = text.read_documents(files, "file")
  assert len(whole) == 0 and whole.skipped["invalid_utf8"] == 1
  with pytest.raises(ValueError, match=r"^config\.data\.one_document_per='page'"):
    text.read_documents(files, "page")


def test_crop_is_a_window_of_the_documents_joined_by_sep(tmp_path):
  (tmp_path / "t.txt").write_text("abc\n" + "x" * 5000 + "\nde\nf", encoding="utf-8")
  docs = text.read_documents([str(tmp_path / "t.txt")], "line")
  run = [3, 0, 2]
  joined = np.concatenate([np.append(bt.encode(s), bt.SEP) for s in ["f", "abc", "de"]])
  short = text.crop_ids(docs, run, 16, np.random.default_rng(0))
  np.testing.assert_array_equal(short[: len(joined)], joined)
  assert (short[len(joined) :] == bt.PAD).all()
  joined = np.concatenate([np.append(bt.encode(s), bt.SEP) for s in ["de", "x" * 5000, "abc"]])
  for seed in range(20):  # a long document: every window matches the naive crop
    start = int(np.random.default_rng(seed).integers(0, len(joined) - 64 + 1))
    window = text.crop_ids(docs, [2, 1, 0], 64, np.random.default_rng(seed))
    np.testing.assert_array_equal(window, joined[start : start + 64])


def test_whole_word_masking():
  ids = np.concatenate([bt.encode("  ".join(f"w{i}é" for i in range(200))), [bt.SEP, 0, 0]])
  spans = mlm_masking.word_spans(ids)
  assert len(spans) == 200 and all(bt.decode(ids[a:b]).startswith("w") for a, b in spans)
  cfg = mlm_masking.MaskingConfig()
  inputs, weights = mlm_masking.mask_sequence(ids, np.random.default_rng(0), cfg)
  chosen = [a for a, b in spans if weights[a:b].any()]
  assert len(chosen) == 30  # 15% of 200 words
  for a, b in spans:  # whole words only
    assert weights[a:b].min() == weights[a:b].max()
  assert weights[ids < bt.OFFSET].sum() == 0
  np.testing.assert_array_equal(inputs[weights == 0], ids[weights == 0])
  again = mlm_masking.mask_sequence(ids, np.random.default_rng(0), cfg)
  np.testing.assert_array_equal(again[0], inputs)
  # 80% MASK / 10% random byte / 10% unchanged, over many predicted bytes.
  rng = np.random.default_rng(1)
  masked = random = kept = 0
  for _ in range(30):
    inputs, weights = mlm_masking.mask_sequence(ids, rng, cfg)
    picked = weights > 0
    masked += np.sum(inputs[picked] == bt.MASK)
    kept += np.sum(inputs[picked] == ids[picked])
    random += np.sum((inputs[picked] != bt.MASK) & (inputs[picked] != ids[picked]))
  total = masked + random + kept
  assert abs(masked / total - 0.8) < 0.03 and abs(kept / total - 0.1) < 0.03
  assert np.all(inputs[weights > 0] < bt.VOCAB_SIZE)
  empty_in, empty_w = mlm_masking.mask_sequence(np.zeros(8, np.int32), rng, cfg)
  assert empty_w.sum() == 0 and (empty_in == 0).all()
  with pytest.raises(ValueError, match=r"^config\.data\.mask_rate=1\.5"):
    mlm_masking.MaskingConfig(mask_rate=1.5)


def test_single_byte_masking():
  ids = np.concatenate([bt.encode("ab cé " * 20), [bt.SEP, 0, 0]])
  num_bytes = int(np.sum(ids >= bt.OFFSET))
  cfg = mlm_masking.MaskingConfig(unit="byte")
  inputs, weights = mlm_masking.mask_sequence(ids, np.random.default_rng(0), cfg)
  assert weights.sum() == round(0.15 * num_bytes)
  assert weights[ids < bt.OFFSET].sum() == 0  # never PAD or SEP
  # Bytes, not words: some chosen byte has an unchosen neighbour inside the same word.
  spans = mlm_masking.word_spans(ids)
  assert any(0 < weights[a:b].sum() < b - a for a, b in spans)
  np.testing.assert_array_equal(inputs[weights == 0], ids[weights == 0])
  with pytest.raises(ValueError, match=r"^config\.data\.mask_unit='token'"):
    mlm_masking.MaskingConfig(unit="token")


def _train(data, start_step, steps, prefix):
  it = data.train_batches(start_step, prefix)
  return [next(it) for _ in range(steps)]


def test_batches_follow_the_contract(tmp_path):
  config = _config(_write_corpus(tmp_path))
  data = datasets.load(config, FACTS)
  assert data.num_train_examples == 40 // 3 and data.num_eval_examples == 3  # ceil(7 / 3)
  (batch,) = _train(data, 0, 1, (2, 2))
  assert batch["inputs"].shape == (2, 2, 32) and batch["inputs"].dtype == np.int32
  assert batch["labels"]["ids"].dtype == np.int32
  assert batch["labels"]["weights"].dtype == np.float32
  weights, ids = batch["labels"]["weights"], batch["labels"]["ids"]
  assert weights.sum() > 0
  np.testing.assert_array_equal(batch["inputs"][weights == 0], ids[weights == 0])
  assert (ids == bt.SEP).any()
  # Resuming at step 3 gives the batches of an uninterrupted run; two processes share them.
  whole = _train(data, 0, 5, (4,))
  np.testing.assert_array_equal(_train(data, 3, 1, (4,))[0]["inputs"], whole[3]["inputs"])
  halves = [datasets.load(config, FACTS, process_index=p, process_count=2) for p in range(2)]
  for step in (0, 4):  # step 4 is in the second epoch (3 steps of 12 documents each)
    joined = np.concatenate([_train(h, step, 1, (2,))[0]["inputs"] for h in halves])
    np.testing.assert_array_equal(joined, whole[step]["inputs"])
  # Evaluation: every example once, the same bytes whatever the seed or process count.
  batches = list(data.eval_batches((4,)))
  assert [b["mask"].tolist() for b in batches] == [[1, 1, 1, 0]]
  assert batches[0]["labels"]["weights"][3].sum() == 0
  other = datasets.load(_config(tmp_path, seed=5), FACTS)
  np.testing.assert_array_equal(next(other.eval_batches((4,)))["inputs"], batches[0]["inputs"])
  assert not np.array_equal(_train(other, 0, 1, (4,))[0]["inputs"], whole[0]["inputs"])


def test_configuration_errors(tmp_path):
  root = _write_corpus(tmp_path)
  with pytest.raises(ValueError, match="fewer than batch_size=16 x docs_per_example=3"):
    datasets.load(_config(root, batch_size=16), FACTS)
  with pytest.raises(ValueError, match=r"config\.data\.data_dir=.*no files in train/"):
    datasets.load(_config(tmp_path / "nowhere"), FACTS)
  wrong = contract.ModelFacts(input_shapes=(32, 1), num_classes=bt.VOCAB_SIZE)
  with pytest.raises(ValueError, match=r"byte ids \[L\]"):
    datasets.load(_config(root), wrong)
