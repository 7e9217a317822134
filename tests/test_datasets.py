"""Tests of `perceiver_jax/data/datasets.py`: `load` refuses a dataset whose splits are empty
before any training step (an empty evaluation split used to fail only at the first evaluation,
after all the training)."""

import ml_collections
import numpy as np
import pytest

from perceiver_jax.data import contract
from perceiver_jax.data import datasets

FACTS = datasets.ModelFacts(input_shapes=(4,), num_classes=3)


def _config(name: str) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({"data": {"name": name}})


def _fake_maker(num_train: int, num_eval: int):
  """A dataset's `make_data` whose splits have these sizes (its batches are never asked for)."""

  def make_data(config, facts, *, process_index, process_count):
    example = {"inputs": np.zeros((1, 4), np.float32), "labels": np.zeros((1,), np.int32)}
    return contract.Data(num_train, num_eval, iter, iter, example)

  return make_data


@pytest.mark.parametrize(
  "num_train, num_eval, split", [(0, 10, "training"), (100, 0, "evaluation")]
)
def test_load_refuses_an_empty_split(monkeypatch, num_train, num_eval, split):
  monkeypatch.setitem(datasets._MAKERS, "audioset", _fake_maker(num_train, num_eval))
  with pytest.raises(ValueError) as info:
    datasets.load(_config("audioset"), FACTS)
  assert str(info.value) == f"config.data.name='audioset': the {split} split is empty (0 examples)"


def test_load_accepts_non_empty_splits(monkeypatch):
  monkeypatch.setitem(datasets._MAKERS, "audioset", _fake_maker(100, 1))
  data = datasets.load(_config("audioset"), FACTS)
  assert (data.num_train_examples, data.num_eval_examples) == (100, 1)
