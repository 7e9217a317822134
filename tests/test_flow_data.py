"""The optical-flow loader: training batches, reversed pairs, tiled evaluation rows, every
on-disk format trained through `python -m perceiver_jax.main`."""

import json
import os

import numpy as np
import pytest

from configs import flow as flow_config
from perceiver_jax import model
from perceiver_jax.data import contract
from perceiver_jax.data import datasets
from perceiver_jax.data import flow as flow_data
from perceiver_jax.tools import flow_tiles
from tests import flow_fixtures
from tests import main_runner

TILE = (32, 48)  # the flow_testing model's frames


def _config(**data):
  config = flow_config.get_config("runlocal")
  config.data.update(data)
  return config


def _load(config, process_index=0, process_count=1):
  facts = datasets.ModelFacts(model.input_shapes(config.model), config.model.num_classes)
  return datasets.load(config, facts, process_index=process_index, process_count=process_count)


def test_training_batches_follow_the_contract_and_resume_exactly():
  config = _config(procedural_train_pairs=64)
  data = _load(config)
  assert data.num_train_examples == 64 and data.num_eval_examples == 8
  batches = data.train_batches(0, (2, 4))
  first, second = next(batches), next(batches)
  assert first["inputs"].shape == (2, 4, 2, *TILE, 3) and first["inputs"].dtype == np.float32
  assert first["labels"]["flow"].shape == (2, 4, *TILE, 2)
  assert first["labels"]["valid"].shape == (2, 4, *TILE)
  assert -1.0 <= first["inputs"].min() and first["inputs"].max() <= 1.0
  assert first["inputs"].std() > 0.2  # textured frames, not flat
  # Generated pairs move by a few pixels: some flow, not absurd flow.
  speed = np.linalg.norm(first["labels"]["flow"], axis=-1)
  assert 0.3 < speed.mean() < 10.0
  resumed = next(_load(config).train_batches(1, (2, 4)))
  np.testing.assert_array_equal(resumed["inputs"], second["inputs"])
  np.testing.assert_array_equal(resumed["labels"]["flow"], second["labels"]["flow"])


def test_training_pairs_are_the_generated_pairs_when_nothing_is_augmented():
  config = _config(procedural_train_pairs=16)
  config.data.augment.enabled = False  # only the crop, and the pairs are the model's size
  data = _load(config)
  order = contract.TrainOrder(16, config.batch_size, config.seed)
  batch = next(data.train_batches(0, (config.batch_size,)))
  source = flow_data.pair_source(config.data, "train", TILE)
  for slot in range(3):
    pair = source.load(order.index(0, slot))
    np.testing.assert_array_equal(batch["inputs"][slot, 0], flow_data.normalize(pair["frame1"]))
    np.testing.assert_array_equal(batch["inputs"][slot, 1], flow_data.normalize(pair["frame2"]))
    np.testing.assert_array_equal(batch["labels"]["flow"][slot], pair["flow"])


def test_reversed_pairs_swap_the_frames_and_take_the_backward_flow():
  config = _config(procedural_train_pairs=8, reverse_pairs=True)
  config.data.augment.enabled = False
  config.batch_size = 16
  data = _load(config)
  assert data.num_train_examples == 16  # each pair both ways
  order = contract.TrainOrder(16, 16, config.seed)
  batch = next(data.train_batches(0, (16,)))
  source = flow_data.pair_source(config.data, "train", TILE)
  seen = set()
  for slot in range(16):
    index = order.index(0, slot)
    pair = source.load(index % 8)
    if index < 8:
      first, second, flow = pair["frame1"], pair["frame2"], pair["flow"]
    else:
      first, second, flow = pair["frame2"], pair["frame1"], pair["flow_backward"]
    np.testing.assert_array_equal(batch["inputs"][slot, 0], flow_data.normalize(first))
    np.testing.assert_array_equal(batch["inputs"][slot, 1], flow_data.normalize(second))
    np.testing.assert_array_equal(batch["labels"]["flow"][slot], flow)
    seen.add(index)
  assert seen == set(range(16))


def test_evaluation_rows_tile_every_pair_once_over_processes():
  config = _config(procedural_eval_pairs=5, procedural_eval_size=(40, 60))
  config.eval_batch_size = 4
  origins = flow_tiles.tile_origins((40, 60), TILE, config.data.tile_overlap)
  assert len(origins) == 4
  source = flow_data.pair_source(config.data, "eval", TILE)
  rows, lengths = [], []
  for p in range(2):
    batches = list(_load(config, p, 2).eval_batches((2,)))
    lengths.append(len(batches))
    for batch in batches:
      for j in np.flatnonzero(batch["mask"]):
        pair, t, num_tiles, y, x, height, width = batch["labels"]["tile"][j]
        assert (num_tiles, height, width) == (4, 40, 60) and (y, x) == origins[t]
        sample = source.load(pair)
        frames = flow_tiles.extract_tiles(
          flow_data.normalize(sample["frame1"]),
          flow_data.normalize(sample["frame2"]),
          [(y, x)],
          TILE,
        )[0]
        np.testing.assert_array_equal(batch["inputs"][j], frames)
        np.testing.assert_array_equal(
          batch["labels"]["flow"][j], sample["flow"][y : y + 32, x : x + 48]
        )
        rows.append((int(pair), int(t), p))
  assert lengths[0] == lengths[1]  # processes step evaluation in lockstep
  assert sorted((pair, t) for pair, t, _ in rows) == [(p, t) for p in range(5) for t in range(4)]
  for pair in range(5):  # a pair's tiles stay on one process
    assert len({p for q, _, p in rows if q == pair}) == 1


def test_bad_settings_and_data_get_one_line_errors(tmp_path):
  with pytest.raises(ValueError, match="config.data.train_set='chairs'"):
    _load(_config(train_set="chairs"))
  with pytest.raises(ValueError, match="config.data.eval_dir='': set the root folder"):
    _load(_config(eval_set="sintel_clean"))
  with pytest.raises(ValueError, match=r"config.data.procedural_eval_size=\(20, 60\)"):
    _load(_config(procedural_eval_size=(20, 60)))
  with pytest.raises(ValueError, match="config.data.tile_overlap=32"):
    _load(_config(tile_overlap=32))
  root = str(tmp_path / "sintel")
  flow_fixtures.sintel(root, (36, 52))
  with pytest.raises(ValueError, match="train_set 'sintel_clean' has no backward flow"):
    _load(_config(train_set="sintel_clean", train_dir=root, reverse_pairs=True))
  small = str(tmp_path / "small")
  flow_fixtures.pair_folder(small, 2, (30, 60))
  with pytest.raises(ValueError, match=r"pair00_1.png: image of 30 x 60 is smaller than one tile"):
    _load(_config(eval_set="pairs", eval_dir=small))
  config = _config(train_set="pairs", train_dir=small)
  config.batch_size = 2
  with pytest.raises(ValueError, match=r"pair00_1.png: sample of 30x60 is smaller than the crop"):
    _load(config)


def test_kitti_sparse_validity_reaches_the_labels(tmp_path):
  root = str(tmp_path / "kitti")
  samples = flow_fixtures.kitti(root, 2, (32, 48))
  config = _config(eval_set="kitti", eval_dir=root)
  config.eval_batch_size = 2
  batch = next(iter(_load(config).eval_batches((2,))))
  for j in range(2):
    pair = batch["labels"]["tile"][j][0]
    np.testing.assert_array_equal(batch["labels"]["valid"][j], samples[pair]["valid"])
    # KITTI stores flow in 1/64 px.
    valid = samples[pair]["valid"]
    np.testing.assert_allclose(
      batch["labels"]["flow"][j][valid], samples[pair]["flow"][valid], atol=0.5 / 64 + 1e-4
    )


EVAL_SETS = {  # the split each format's training run evaluates on
  "flying_chairs": "flying_chairs_val",
  "sintel_clean": "sintel_final",
  "kitti": "kitti",
  "pairs": "pairs",
  "autoflow": "autoflow",
}


@pytest.mark.parametrize("train_set", sorted(flow_fixtures.WRITERS))
def test_each_format_trains_two_steps_through_main(tmp_path, train_set):
  root = str(tmp_path / train_set)
  flow_fixtures.WRITERS[train_set](root, (36, 52))  # a little larger than the 32 x 48 model
  eval_set = EVAL_SETS[train_set]
  flags = [
    f"--config.data.train_set={train_set}",
    f"--config.data.train_dir={root}",
    f"--config.data.eval_set={eval_set}",
    f"--config.data.eval_dir={root}",
    "--config.total_steps=2",
    "--config.eval_every_steps=2",
    "--config.batch_size=2",
    "--config.eval_batch_size=4",
    "--config.data.num_threads=2",
  ]
  if train_set == "pairs":
    flags.append("--config.data.reverse_pairs=True")
  result = main_runner.run_main("flow.py:runlocal", tmp_path / "w", *flags, num_devices=1)
  assert result.returncode == 0, result.stderr[-3000:]
  final = json.loads((tmp_path / "w" / "final.json").read_text())
  assert final["step"] == 2
  pairs = {"flying_chairs_val": 1, "sintel_final": 3, "kitti": 3, "pairs": 3, "autoflow": 3}
  assert final["eval/pairs"] == pairs[eval_set]
  # An almost untrained model predicts almost no flow: its EPE is about the mean true speed.
  assert 0.3 < final["eval/epe"] < 10.0
  assert os.path.isdir(tmp_path / "w" / "checkpoints" / "2")
