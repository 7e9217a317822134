"""Optical-flow data: frame pairs and their flow, from disk or generated, for training and
tiled evaluation.

`config.data` (defaults in `default_config`):
  train_set, train_dir   the training pairs: a name of `SETS` and its root folder;
  eval_set, eval_dir     the evaluation pairs, likewise (e.g. "sintel_clean" and its root);
  procedural*            the generated pairs of `flow_procedural` (exact flow): the scene
                         model, the number of pairs of each split, the evaluation frame size
                         (() = the model's), and the seed that fixes the dataset;
  augment                `flow_augment`'s photometric and spatial augmentation;
  reverse_pairs          the paper's last phase: every pair is also fed reversed (frame 2 then
                         frame 1, with the backward flow as target), doubling the epoch;
                         needs backward flow (generated pairs; `NAME_backward.flo` in a folder
                         of pairs);
  tile_overlap           the minimum overlap of evaluation tiles (20, as the release's colab);
  num_threads            threads that read and augment a batch's pairs.

Training batches (the trainer's contract, `contract.py`): inputs float32
[*prefix, 2, h, w, 3], the two frames in [-1, 1], cropped and augmented to the model's frame
size (h, w); labels {"flow": float32 [*prefix, h, w, 2], "valid": float32 [*prefix, h, w]}.
Example slot j of step k is pair `TrainOrder.index(k, j)` augmented by
`TrainOrder.rng(AUGMENT_STREAM, k, j)`: a resumed run sees the same batches.

Evaluation is tiled, at any frame size of at least one tile: each pair is cut into overlapping
tiles of the model's size by `tools.flow_tiles` (the code of the inference CLI), one tile per
row, with labels["tile"] saying which pair and where (see perceiver_jax/tasks/flow.py, which
stitches them back). A pair's tiles stay on one process; every process yields the same
number of batches (padding rows carry mask 0).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
from collections.abc import Callable
from collections.abc import Iterator

import ml_collections
import numpy as np

from perceiver_jax.data import contract
from perceiver_jax.data import flow_augment
from perceiver_jax.data import flow_formats
from perceiver_jax.data import flow_layouts
from perceiver_jax.data import flow_procedural
from perceiver_jax.tools import flow_tiles

PROCEDURAL = "procedural"
# Dataset names -> the layout reader of their root folder.
SETS: dict[str, Callable[[str], list[flow_layouts.FlowSample]]] = {
  "flying_chairs": lambda root: flow_layouts.flying_chairs_samples(root, "train"),
  "flying_chairs_val": lambda root: flow_layouts.flying_chairs_samples(root, "val"),
  "sintel_clean": lambda root: flow_layouts.sintel_samples(root, "training", "clean"),
  "sintel_final": lambda root: flow_layouts.sintel_samples(root, "training", "final"),
  "sintel": lambda root: [
    *flow_layouts.sintel_samples(root, "training", "clean"),
    *flow_layouts.sintel_samples(root, "training", "final"),
  ],
  "kitti": lambda root: flow_layouts.kitti_samples(root, "training", "occ"),
  "pairs": flow_layouts.pair_folder_samples,
  "autoflow": flow_layouts.autoflow_samples,
}
SET_NAMES = (PROCEDURAL, *SETS)
# The two splits of the generated data draw from different streams of the dataset seed.
_PROCEDURAL_SPLITS = {"train": 0, "eval": 1}


def default_config() -> ml_collections.ConfigDict:
  """`config.data` of the flow loader, every field at its default (generated pairs)."""
  return ml_collections.ConfigDict(
    dict(
      name="flow",
      train_set=PROCEDURAL,
      train_dir="",
      eval_set=PROCEDURAL,
      eval_dir="",
      procedural=flow_procedural.default_config(),
      procedural_train_pairs=100_000,
      procedural_eval_pairs=256,
      procedural_eval_size=(),
      procedural_seed=0,
      augment=flow_augment.default_config(),
      reverse_pairs=False,
      tile_overlap=20,
      num_threads=4,
    )
  )


def _fail(field: str, value, message: str):
  raise ValueError(f"config.data.{field}={value!r}: {message}")


def normalize(frame: np.ndarray) -> np.ndarray:
  """A frame of [0, 255] values -> float32 in [-1, 1], as the released model takes it."""
  return (np.asarray(frame, np.float32) / 127.5 - 1.0).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class PairSource:
  """The pairs of one split: `load(i)` gives a sample dict (`flow_layouts.load_sample`'s
  keys), `size(i)` its frame size without decoding it."""

  name: str
  num_pairs: int
  load: Callable[[int], dict]
  size: Callable[[int], tuple[int, int]]
  has_backward: bool
  describe: Callable[[int], str]  # where pair i comes from, for error messages


def _procedural_source(cfg, split: str, size: tuple[int, int]) -> PairSource:
  scene = flow_procedural.scene_config(cfg.procedural)
  field = f"procedural_{split}_pairs"
  count = cfg[field]
  if count < 1:
    _fail(field, count, "must be at least 1")
  stream = _PROCEDURAL_SPLITS[split]

  def load(i: int) -> dict:
    rng = np.random.default_rng((cfg.procedural_seed, stream, i))
    return flow_procedural.make_pair(rng, size, scene)

  return PairSource(
    PROCEDURAL, count, load, lambda i: size, True, lambda i: f"generated {split} pair {i}"
  )


def _disk_source(name: str, root: str, field: str) -> PairSource:
  if not root:
    _fail(field, root, f"set the root folder of the {name!r} pairs")
  samples = SETS[name](root)
  missing = [s for s in samples if s.valid == flow_layouts.VALID_NONE]
  if missing:
    raise ValueError(f"{missing[0].frame1}: a {name!r} pair without ground-truth flow")
  return PairSource(
    name,
    len(samples),
    lambda i: flow_layouts.load_sample(samples[i]),
    lambda i: flow_formats.frame_size(samples[i].frame1),
    all(s.flow_backward is not None for s in samples),
    lambda i: samples[i].frame1,
  )


def pair_source(cfg: ml_collections.ConfigDict, split: str, model_size: tuple[int, int]):
  """The `PairSource` of `split` ("train" or "eval") of `config.data`."""
  name, root = cfg[f"{split}_set"], cfg[f"{split}_dir"]
  if name not in SET_NAMES:
    _fail(f"{split}_set", name, f"expected one of {SET_NAMES}")
  if name != PROCEDURAL:
    return _disk_source(name, root, f"{split}_dir")
  size = model_size
  if split == "eval" and tuple(cfg.procedural_eval_size):
    size = tuple(int(v) for v in cfg.procedural_eval_size)
    if len(size) != 2 or size[0] < model_size[0] or size[1] < model_size[1]:
      _fail("procedural_eval_size", tuple(cfg.procedural_eval_size), f"needs >= {model_size}")
  return _procedural_source(cfg, split, size)


def training_example(
  sample: dict, crop: tuple[int, int], rng: np.random.Generator, augment, *, reverse: bool
) -> dict:
  """One training example (contract layout, no batch axis) from a loaded pair."""
  if reverse:
    sample = flow_augment.reverse(sample)
  out = flow_augment.augment(sample, crop, rng, augment)
  return {
    "inputs": np.stack([normalize(out["frame1"]), normalize(out["frame2"])]),
    "labels": {
      "flow": np.asarray(out["flow"], np.float32),
      "valid": np.asarray(out["valid"], np.float32),
    },
  }


def _stack(examples: list[dict]) -> dict:
  return {
    "inputs": np.stack([e["inputs"] for e in examples]),
    "labels": {k: np.stack([e["labels"][k] for e in examples]) for k in examples[0]["labels"]},
  }


def _check_model(facts: contract.ModelFacts) -> tuple[int, int]:
  shape = facts.input_shapes
  if isinstance(shape, dict) or len(shape) != 4 or shape[0] != 2:
    raise ValueError(f"the flow data needs a frame-pair model (2, H, W, 3), got inputs {shape}")
  return int(shape[1]), int(shape[2])


def make_data(
  config: ml_collections.ConfigDict,
  facts: contract.ModelFacts,
  *,
  process_index: int,
  process_count: int,
) -> contract.Data:
  """`contract.Data` of `config.data` (see the module docstring)."""
  cfg = config.data
  tile = _check_model(facts)
  augment = flow_augment.augment_config(cfg.augment)
  if cfg.tile_overlap < 0 or cfg.tile_overlap >= min(tile):
    _fail("tile_overlap", cfg.tile_overlap, f"must be in [0, {min(tile)}) for tiles of {tile}")
  if cfg.num_threads < 1:
    _fail("num_threads", cfg.num_threads, "must be at least 1")
  train = pair_source(cfg, "train", tile)
  if cfg.reverse_pairs and not train.has_backward:
    _fail("reverse_pairs", True, f"train_set {train.name!r} has no backward flow to reverse with")
  evaluation = pair_source(cfg, "eval", tile)
  num_train = train.num_pairs * (2 if cfg.reverse_pairs else 1)
  order = contract.TrainOrder(
    num_train, config.batch_size, config.seed, process_index, process_count
  )

  def example(step: int, slot: int) -> dict:
    index = order.index(step, slot)
    pair, reverse = index % train.num_pairs, index >= train.num_pairs
    rng = order.rng(contract.AUGMENT_STREAM, step, slot)
    try:
      return training_example(train.load(pair), tile, rng, augment, reverse=reverse)
    except ValueError as e:
      raise ValueError(f"{train.describe(pair)}: {e}") from None

  def train_batches(start_step: int, prefix: contract.Prefix) -> Iterator[dict]:
    contract.check_start_step(start_step)
    contract.local_shape(config.batch_size, process_count, prefix)
    return _train_iter(start_step, prefix)

  def _train_iter(start_step, prefix):
    with concurrent.futures.ThreadPoolExecutor(cfg.num_threads) as pool:
      step = start_step
      while True:
        slots = range(order.first_slot, order.first_slot + order.local)
        examples = list(pool.map(lambda slot, s=step: example(s, slot), slots))
        yield contract.to_prefix(_stack(examples), prefix)
        step += 1

  eval_rows = EvalTiles(evaluation, tile, cfg.tile_overlap)

  def eval_batches(prefix: contract.Prefix) -> Iterator[dict]:
    local, prefix = contract.local_shape(config.eval_batch_size, process_count, prefix)
    return eval_rows.batches(local, prefix, process_index, process_count)

  return contract.Data(
    num_train_examples=num_train,
    num_eval_examples=evaluation.num_pairs,
    train_batches=train_batches,
    eval_batches=eval_batches,
    example=contract.to_prefix(_stack([example(0, 0)]), (1,)),
  )


class EvalTiles:
  """The tile rows of an evaluation split: which process evaluates which pair's tiles.

  `batches(local, prefix, process_index, process_count)` yields this process's batches of
  `local` rows in the layout of the module docstring (the trainer's evaluation, and
  `python -m perceiver_jax.flow --evaluate`)."""

  def __init__(self, source: PairSource, tile: tuple[int, int], overlap: int):
    self.source, self.tile, self.overlap = source, tile, overlap
    self.origins = []
    for i in range(source.num_pairs):
      try:
        self.origins.append(flow_tiles.tile_origins(source.size(i), tile, overlap))
      except ValueError as e:
        raise ValueError(f"{source.describe(i)}: {e}") from None

  def rows(self, process_index: int, process_count: int) -> list[tuple[int, int]]:
    """(pair, tile) of every row of this process, pair by pair."""
    pairs = contract.shard_for_process(
      self.source.num_pairs, process_index, process_count, drop_remainder=False
    )
    return [(int(p), t) for p in pairs for t in range(len(self.origins[p]))]

  def batches(self, local, prefix, process_index, process_count) -> Iterator[dict]:
    rows = self.rows(process_index, process_count)
    # Every process runs as many batches as the one with the most rows.
    most = max(len(self.rows(p, process_count)) for p in range(process_count))
    padded = rows + [(-1, -1)] * (-(-most // local) * local - len(rows))
    loaded = (None, None)  # (pair, its normalised pair, flow and valid)
    for start in range(0, len(padded), local):
      batch = self._empty(local)
      for j, (pair, t) in enumerate(padded[start : start + local]):
        if pair < 0:
          continue
        if loaded[0] != pair:
          loaded = (pair, self._load(pair))
        frames, flow, valid = loaded[1]
        (y, x), (h, w) = self.origins[pair][t], self.tile
        batch["inputs"][j] = frames[:, y : y + h, x : x + w]
        batch["labels"]["flow"][j] = flow[y : y + h, x : x + w]
        batch["labels"]["valid"][j] = valid[y : y + h, x : x + w]
        height, width = frames.shape[1:3]
        num_tiles = len(self.origins[pair])
        batch["labels"]["tile"][j] = (pair, t, num_tiles, y, x, height, width)
        batch["mask"][j] = 1.0
      yield contract.to_prefix(batch, prefix)

  def _load(self, pair: int):
    try:
      sample = self.source.load(pair)
    except ValueError as e:
      raise ValueError(f"{self.source.describe(pair)}: {e}") from None
    size = sample["frame1"].shape[:2]
    if size != tuple(self.source.size(pair)):
      raise ValueError(f"{self.source.describe(pair)}: frames of {size}, header said otherwise")
    frames = np.stack([normalize(sample["frame1"]), normalize(sample["frame2"])])
    return frames, sample["flow"], sample["valid"].astype(np.float32)

  def _empty(self, local: int) -> dict:
    h, w = self.tile
    return {
      "inputs": np.zeros((local, 2, h, w, 3), np.float32),
      "labels": {
        "flow": np.zeros((local, h, w, 2), np.float32),
        "valid": np.zeros((local, h, w), np.float32),
        "tile": np.full((local, 7), -1, np.int32),
      },
      "mask": np.zeros((local,), np.float32),
    }
