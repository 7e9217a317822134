"""Tests for perceiver_jax/data/contract.py: the shared training order, eval sharding, checks."""

import numpy as np
import pytest

from perceiver_jax.data import contract


@pytest.mark.parametrize("process_count", [1, 2, 3])
@pytest.mark.parametrize("num_examples", [0, 1, 2, 10, 11, 13])
def test_eval_shards_cover_every_example_once(num_examples, process_count):
  shards = [
    contract.shard_for_process(num_examples, p, process_count, drop_remainder=False)
    for p in range(process_count)
  ]
  np.testing.assert_array_equal(np.concatenate(shards), np.arange(num_examples))
  sizes = [len(s) for s in shards]
  assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("process_count", [1, 2, 3])
def test_train_shards_equal_and_disjoint(process_count):
  shards = [contract.shard_for_process(11, p, process_count) for p in range(process_count)]
  assert {len(s) for s in shards} == {11 // process_count}
  everything = np.concatenate(shards)
  assert len(np.unique(everything)) == len(everything)


def test_shard_rejects_bad_process_index():
  with pytest.raises(ValueError, match=r"process_index=2 must be in \[0, process_count=2\)"):
    contract.shard_for_process(10, 2, 2)


def _global_batch(orders, step):
  """The examples of one global step, process by process, slot by slot."""
  return np.concatenate([order.local_indices(step) for order in orders])


def test_a_steps_global_batch_is_the_same_for_1_and_4_processes():
  one = contract.TrainOrder(37, 8, seed=3)
  four = [contract.TrainOrder(37, 8, 3, p, 4) for p in range(4)]
  for step in range(12):  # 4 steps per epoch: three epochs
    expected = _global_batch([one], step)
    np.testing.assert_array_equal(_global_batch(four, step), expected)
    # Slot by slot, on the process that owns it, `index` agrees with the batch.
    for slot in range(8):
      order = four[slot // 2]
      assert order.first_slot <= slot < order.first_slot + order.local
      assert order.index(step, slot) == expected[slot]
    assert len(np.unique(expected)) == 8


def test_epochs_are_permutations_of_the_first_whole_batches():
  order = contract.TrainOrder(10, 3, seed=0)  # 3 steps per epoch, one example dropped
  permutation = np.random.default_rng((0, 1)).permutation(10)
  epoch1 = np.concatenate([order.local_indices(step) for step in (3, 4, 5)])
  np.testing.assert_array_equal(epoch1, permutation[:9])
  assert order.index(4, 2, skip=1) == permutation[6]  # the replacement: one place later
  assert order.index(5, 2, skip=1) == permutation[9]
  assert order.index(5, 2, skip=2) == permutation[0]  # wraps around the epoch's order


def test_a_resumed_counter_equals_an_uninterrupted_one():
  orders = [contract.TrainOrder(23, 6, 42, p, 3) for p in range(3)]
  for order in orders:
    full = [order.step_and_slot(0, counter) for counter in range(40)]
    for start_step in (1, 3, 7):
      resumed = [order.step_and_slot(start_step, c) for c in range(40 - 2 * start_step)]
      assert resumed == full[2 * start_step :]  # 2 examples per step on each process
    assert {slot for _, slot in full} == set(range(order.first_slot, order.first_slot + 2))


def test_rng_is_a_function_of_seed_stream_step_and_slot():
  a, b = contract.TrainOrder(20, 4, 1), contract.TrainOrder(20, 4, 1, 1, 2)
  draw = a.rng(contract.AUGMENT_STREAM, 5, 3).random(4)
  np.testing.assert_array_equal(b.rng(contract.AUGMENT_STREAM, 5, 3).random(4), draw)
  expected = np.random.default_rng((1, contract.AUGMENT_STREAM, 5, 3)).random(4)
  np.testing.assert_array_equal(draw, expected)
  others = [
    a.rng(contract.MIX_STREAM, 5, 3),
    a.rng(contract.AUGMENT_STREAM, 6, 3),
    a.rng(contract.AUGMENT_STREAM, 5, 2),
    contract.TrainOrder(20, 4, 2).rng(contract.AUGMENT_STREAM, 5, 3),
  ]
  for rng in others:
    assert not np.array_equal(rng.random(4), draw)


def test_train_order_rejects_impossible_settings():
  with pytest.raises(ValueError, match="batch_size=16 exceeds the 10 training examples"):
    contract.TrainOrder(10, 16, 0, 0, 2)
  with pytest.raises(
    ValueError, match="batch_size=7 must be a positive multiple of process_count=2"
  ):
    contract.TrainOrder(10, 7, 0, 0, 2)
  with pytest.raises(ValueError, match=r"process_index=2 must be in \[0, process_count=2\)"):
    contract.TrainOrder(10, 4, 0, 2, 2)
  with pytest.raises(ValueError, match="start_step=-1 must be >= 0"):
    contract.check_start_step(-1)


def test_padded_eval_indices_are_whole_batches_of_the_largest_shard():
  shards = [contract.padded_eval_indices(7, 2, p, 3) for p in range(3)]
  assert [s.tolist() for s in shards] == [[0, 1, 2, -1], [3, 4, -1, -1], [5, 6, -1, -1]]


def test_to_prefix_reshapes_nested_leaves():
  batch = {"inputs": {"audio": np.zeros((6, 5))}, "labels": np.arange(6)}
  out = contract.to_prefix(batch, (2, 3))
  assert out["inputs"]["audio"].shape == (2, 3, 5) and out["labels"].shape == (2, 3)


def test_check_example_names_the_dataset_and_both_shapes():
  facts = contract.ModelFacts({"audio": (8,), "video": (2, 4, 4, 3)}, 5)
  good = {
    "inputs": {"audio": np.zeros((1, 8)), "video": np.zeros((1, 2, 4, 4, 3))},
    "labels": np.zeros((1, 5)),
  }
  contract.check_example(good, facts, "toy")
  with pytest.raises(ValueError, match=r"^toy gives inputs of shape \{'audio': \(1, 8\)\}, "):
    contract.check_example({**good, "inputs": {"audio": np.zeros((1, 8))}}, facts, "toy")
  with pytest.raises(ValueError, match=r"toy gives labels of shape \(1, 4\) for a model of 5"):
    contract.check_example({**good, "labels": np.zeros((1, 4))}, facts, "toy")
  windowed = {"inputs": np.zeros((1, 3, 7)), "labels": np.zeros(1, np.int32)}
  contract.check_example(windowed, contract.ModelFacts((7,), 5, 3), "toy", windows=3)
