"""Tests for perceiver_jax/data/pipeline.py: in-memory batching in the shared order, eval padding,
`in_memory_data`, prefetching."""

import itertools
import threading

import ml_collections
import numpy as np
import pytest

from perceiver_jax.data import contract
from perceiver_jax.data import pipeline


def make_arrays(n: int) -> dict[str, np.ndarray]:
  """Example i carries id i, so every batch says exactly which examples it holds."""
  return {"id": np.arange(n), "image": np.arange(n * 6, dtype=np.float32).reshape(n, 2, 3)}


def take(iterator, n):
  return list(itertools.islice(iterator, n))


def test_train_batches_shuffle_each_epoch_without_repeats():
  arrays = make_arrays(10)
  batches = take(pipeline.train_batches(arrays, 3, seed=0), 6)  # 3 steps per epoch.
  epochs = [np.concatenate([b["id"] for b in batches[i : i + 3]]) for i in (0, 3)]
  for ids in epochs:
    assert len(np.unique(ids)) == 9  # One example of 10 dropped per epoch, none repeated.
  assert not np.array_equal(epochs[0], epochs[1])
  np.testing.assert_array_equal(batches[0]["image"], arrays["image"][batches[0]["id"]])


@pytest.mark.parametrize("process_count", [1, 3])
@pytest.mark.parametrize("start_step", [1, 3, 4, 11, 12, 25])
def test_resume_matches_uninterrupted_run(start_step, process_count):
  arrays, kwargs = make_arrays(23), dict(seed=42, process_count=process_count)
  for p in range(process_count):
    # 23 // process_count examples, batch 2 per process: 11 or 3 steps per epoch, so
    # 30 steps span 2+ epochs and the resume points fall mid-epoch and on a boundary.
    full = take(pipeline.train_batches(arrays, 2 * process_count, process_index=p, **kwargs), 30)
    resumed = pipeline.train_batches(
      arrays, 2 * process_count, process_index=p, start_step=start_step, **kwargs
    )
    for expected, got in zip(full[start_step:], take(resumed, 30 - start_step), strict=True):
      for key in arrays:
        np.testing.assert_array_equal(got[key], expected[key])


def test_train_processes_see_disjoint_examples_each_step():
  arrays = make_arrays(12)
  iters = [
    pipeline.train_batches(arrays, 4, seed=1, process_index=p, process_count=2) for p in (0, 1)
  ]
  for _ in range(5):
    ids = np.concatenate([next(it)["id"] for it in iters])
    assert len(np.unique(ids)) == 4


def test_train_seed_changes_order():
  arrays = make_arrays(50)
  first = [next(pipeline.train_batches(arrays, 10, seed=s))["id"] for s in (0, 1)]
  assert not np.array_equal(*first)


def test_shape_prefix_reshapes_each_array():
  batch = next(
    pipeline.train_batches(make_arrays(20), 12, seed=0, process_count=2, shape_prefix=(2, 3))
  )
  assert batch["id"].shape == (2, 3) and batch["image"].shape == (2, 3, 2, 3)


@pytest.mark.parametrize("make", [pipeline.train_batches, pipeline.eval_batches])
def test_shape_prefix_validation(make):
  kwargs = dict(seed=0) if make is pipeline.train_batches else {}
  with pytest.raises(ValueError, match=r"shape_prefix=\(4, 2\) has product 8.* = 6"):
    make(make_arrays(20), 12, process_count=2, shape_prefix=(4, 2), **kwargs)  # Eager: no next().
  with pytest.raises(
    ValueError, match="batch_size=7 must be a positive multiple of process_count=2"
  ):
    make(make_arrays(20), 7, process_count=2, **kwargs)


def test_train_rejects_batch_larger_than_dataset():
  with pytest.raises(ValueError, match="batch_size=16 exceeds the 10 training examples"):
    pipeline.train_batches(make_arrays(10), 16, seed=0, process_count=2)


@pytest.mark.parametrize("process_count", [2, 4])
def test_processes_split_the_single_process_global_batch(process_count):
  """The data a model sees does not depend on the number of hosts."""
  arrays = make_arrays(37)
  single = pipeline.train_batches(arrays, 8, seed=3, start_step=2)
  per_process = [
    pipeline.train_batches(
      arrays, 8, seed=3, start_step=2, process_index=p, process_count=process_count
    )
    for p in range(process_count)
  ]
  for _ in range(10):  # crosses epochs (4 steps per epoch)
    expected = next(single)
    parts = [next(it) for it in per_process]
    for key in expected:
      np.testing.assert_array_equal(np.concatenate([b[key] for b in parts]), expected[key])


@pytest.mark.parametrize("process_count", [1, 2, 3])
@pytest.mark.parametrize("num_examples", [1, 7, 12, 13])
def test_eval_counts_each_example_once(num_examples, process_count):
  arrays = make_arrays(num_examples)
  arrays["id"] += 100  # So zero padding cannot pass for a real id.
  seen, num_batches = [], set()
  for p in range(process_count):
    batches = list(
      pipeline.eval_batches(
        arrays, 2 * process_count, process_index=p, process_count=process_count, shape_prefix=(1, 2)
      )
    )
    num_batches.add(len(batches))
    for batch in batches:
      assert batch["mask"].dtype == np.float32 and batch["mask"].shape == (1, 2)
      assert batch["id"].shape == (1, 2) and batch["image"].shape == (1, 2, 2, 3)
      real = batch["mask"].astype(bool)
      assert np.all(batch["id"][~real] == 0)
      seen.extend(batch["id"][real].tolist())
  assert len(num_batches) == 1  # Lockstep: every process runs the same number of steps.
  assert sorted(seen) == list(range(100, 100 + num_examples))


def test_eval_mask_sums_to_true_count():
  batches = list(pipeline.eval_batches(make_arrays(10), 4))
  assert [b["mask"].sum() for b in batches] == [4, 4, 2]


def _in_memory(process_index=0, process_count=1, windows=0, augment=None):
  config = ml_collections.ConfigDict(
    dict(seed=5, batch_size=8, eval_batch_size=4, data=dict(name="toy"))
  )
  rng = np.random.default_rng(0)
  train = {"inputs": rng.normal(size=(20, 3)), "labels": np.arange(20, dtype=np.int32)}
  test = {
    "inputs": rng.normal(size=(6, *((windows,) if windows else ()), 3)),
    "labels": train["labels"][:6],
  }
  return pipeline.in_memory_data(
    config,
    contract.ModelFacts((3,), 20, windows),
    train,
    test,
    prepare=lambda batch: {**batch, "inputs": batch["inputs"].astype(np.float32)},
    augment=augment,
    process_index=process_index,
    process_count=process_count,
  )


def _shift(inputs, rng):
  return inputs + rng.integers(0, 1000)


def test_in_memory_augmentation_draws_per_slot_whatever_the_process_count():
  """Slot j of step k draws from TrainOrder.rng(AUGMENT_STREAM, k, j) on any process, so the
  augmented global batch of 4 processes equals that of one."""
  whole = next(_in_memory(augment=_shift).train_batches(3, (8,)))
  parts = [next(_in_memory(p, 4, augment=_shift).train_batches(3, (1, 2))) for p in range(4)]
  joined = np.concatenate([part["inputs"].reshape(2, 3) for part in parts])
  np.testing.assert_array_equal(joined, whole["inputs"])
  order = contract.TrainOrder(20, 8, 5)
  plain = next(_in_memory().train_batches(3, (8,)))
  shifts = whole["inputs"] - plain["inputs"]  # [8, 3], one draw per example
  expected = [order.rng(contract.AUGMENT_STREAM, 3, j).integers(0, 1000) for j in range(8)]
  np.testing.assert_allclose(shifts[:, 0], expected)
  assert whole["inputs"].dtype == np.float32 and whole["labels"].dtype == np.int32


def test_in_memory_eval_windows_must_match_the_model_facts():
  data = _in_memory(windows=2)
  batch = next(data.eval_batches((4,)))
  assert batch["inputs"].shape == (4, 2, 3) and batch["mask"].tolist() == [1, 1, 1, 1]
  assert data.example["inputs"].shape == (1, 3)
  with pytest.raises(
    ValueError, match=r"'toy' evaluation gives inputs of shape \(1, 3\), .* \(1, 2, 3\)"
  ):
    pipeline.in_memory_data(
      ml_collections.ConfigDict(
        dict(seed=0, batch_size=4, eval_batch_size=4, data=dict(name="toy"))
      ),
      contract.ModelFacts((3,), 20, 2),
      {"inputs": np.zeros((8, 3)), "labels": np.zeros(8, np.int32)},
      {"inputs": np.zeros((8, 3)), "labels": np.zeros(8, np.int32)},
      prepare=lambda batch: batch,
      process_index=0,
      process_count=1,
    )


def test_prefetch_yields_everything_in_order():
  assert list(pipeline.prefetch(iter(range(20)), size=3)) == list(range(20))


def test_prefetch_propagates_producer_exception():
  def broken():
    yield 1
    yield 2
    raise RuntimeError("disk on fire")

  iterator = pipeline.prefetch(broken())
  assert next(iterator) == 1 and next(iterator) == 2
  with pytest.raises(RuntimeError, match="disk on fire"):
    next(iterator)


def test_prefetch_close_stops_thread():
  before = set(threading.enumerate())
  iterator = pipeline.prefetch(itertools.count(), size=2)
  assert next(iterator) == 0
  iterator.close()
  assert not [t for t in set(threading.enumerate()) - before if t.name == "prefetch"]
