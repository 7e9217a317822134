"""Optical flow: end-point error (EPE) training and tiled evaluation.

Outputs are float32 flow in pixels [B, H, W, 2] (u horizontal, v vertical; the flow model
applies the release's output scaling itself). Labels are a dict:
  "flow"   float32 [B, H, W, 2] ground truth;
  "valid"  float32 [B, H, W], 1 where the ground truth is known (KITTI's sparse mask);
  "tile"   int32 [B, 7], evaluation only: which part of which pair a row is (`TILE_FIELDS`).

Training minimises the average end-point error ||predicted - true||_2 over the valid pixels
of the batch (pixels whose true flow exceeds `max_flow` pixels are left out of the loss, as
flow training usually does). Metrics, over valid pixels:
  epe            the average end-point error;
  outliers_Npx   the fraction of pixels with EPE > N, for N = 1, 3, 5;
  fl_all         KITTI 2015's outlier rate: EPE > 3 px and > 5% of the true flow's length.

Evaluation is tiled, as for any image size: the data layer cuts every evaluation pair into
overlapping tiles of the model's size (`tools.flow_tiles`, the code of the inference CLI),
one tile per row, and each row's `tile` field says where it belongs. `eval_step` runs the
model on the tiles; the evaluator collects a pair's tiles, stitches its flow with the CLI's
weighted stitching and scores the whole pair against its whole ground truth. A pair's tiles
stay on one process, so the per-process sums are simply added across processes.
Reported: `eval/epe` (over all valid pixels of the split), `eval/epe_per_image` (the mean
of each pair's EPE), `eval/outliers_{1,3,5}px`, `eval/fl_all`, `eval/count` (valid pixels)
and `eval/pairs`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from perceiver_jax.tasks import base
from perceiver_jax.tools import flow_tiles

# The columns of labels["tile"]: pair index in the split, tile index within the pair, the
# pair's number of tiles, the tile's origin (y, x) and the pair's (height, width).
TILE_FIELDS = ("pair", "tile", "num_tiles", "y", "x", "height", "width")
OUTLIER_THRESHOLDS = (1, 3, 5)
# KITTI 2015: an outlier has an end-point error above 3 px and above 5% of the true flow.
FL_PIXELS, FL_FRACTION = 3.0, 0.05


def error_sums(pred, true, valid) -> dict[str, Any]:
  """Sums over the valid pixels of any leading shape: numpy in, numpy out; jax in, jax out.

  Args:
    pred, true: [..., 2] flow in pixels.
    valid: [...] 0/1 (or bool) mask of the pixels that count.
  Returns:
    float scalars `epe_sum`, `outliers_{1,3,5}px_sum`, `fl_all_sum` and `count` (valid pixels).
  """
  xp = jnp if isinstance(pred, jax.Array) else np
  valid = xp.asarray(valid, xp.float32)
  epe = xp.sqrt(xp.sum(xp.square(xp.asarray(pred, xp.float32) - true), axis=-1))
  length = xp.sqrt(xp.sum(xp.square(xp.asarray(true, xp.float32)), axis=-1))
  sums = {"epe_sum": xp.sum(valid * epe)}
  for n in OUTLIER_THRESHOLDS:
    sums[f"outliers_{n}px_sum"] = xp.sum(valid * (epe > n))
  fl = (epe > FL_PIXELS) & (epe > FL_FRACTION * length)
  return {**sums, "fl_all_sum": xp.sum(valid * fl), "count": xp.sum(valid)}


def _rates(sums: dict, count) -> dict:
  """{metric: sum / count} for every sum but `count` (the `_sum` suffix dropped)."""
  return {key[: -len("_sum")]: value / count for key, value in sums.items() if key != "count"}


@dataclasses.dataclass(frozen=True)
class Flow(base.Task):
  """Fields: `max_flow`, pixels whose true flow is longer are left out of the loss (not of
  the metrics)."""

  NAME = "flow"
  max_flow: float = 400.0

  def __post_init__(self):
    if not self.max_flow > 0:
      base.fail("max_flow", self.max_flow, "must be positive")

  def loss(self, outputs, batch):
    labels = batch["labels"]
    true = labels["flow"]
    pred = outputs.astype(jnp.float32)
    keep = labels["valid"] * (jnp.sum(jnp.square(true), axis=-1) < self.max_flow**2)
    # sqrt(x + tiny) keeps the gradient finite where the prediction is exact.
    epe = jnp.sqrt(jnp.sum(jnp.square(pred - true), axis=-1) + 1e-12)
    count = jnp.maximum(jnp.sum(keep), 1.0)  # a batch with no valid pixel has loss 0
    sums = error_sums(pred, true, labels["valid"])
    metrics = _rates(sums, jnp.maximum(sums["count"], 1.0))
    return jnp.sum(keep * epe) / count, metrics

  def eval_step(self, apply_fn, batch, axis_name):
    """The flow of every tile row [b, h, w, 2]; the stitching and scoring are the host's."""
    del axis_name
    return apply_fn(batch["inputs"]).astype(jnp.float32)

  def evaluator(self) -> TiledFlowEvaluator:
    return TiledFlowEvaluator()


class TiledFlowEvaluator:
  """Stitches each pair's tiles (`flow_tiles.stitch`) and scores the whole pair."""

  def __init__(self):
    self._open: dict[int, list] = {}  # pair -> [(origin, pred, true, valid), ...]
    self._sums = dict.fromkeys(["epe_sum", "count", "pairs", "image_epe_sum"], 0.0)

  def add(self, step_outputs, batch) -> None:
    mask = batch["mask"]
    labels = batch["labels"]
    preds = base.real_rows(step_outputs, mask)
    rows = [base.real_rows(labels[key], mask) for key in ("flow", "valid", "tile")]
    for pred, true, valid, tile in zip(preds, *rows, strict=True):
      pair, _, num_tiles, y, x, height, width = (int(v) for v in tile)
      tiles = self._open.setdefault(pair, [])
      tiles.append(((y, x), pred, true, valid))
      if len(tiles) == num_tiles:
        self._score(self._open.pop(pair), (height, width))

  def _score(self, tiles: list, size: tuple[int, int]) -> None:
    origins = [origin for origin, *_ in tiles]
    pred = flow_tiles.stitch(np.stack([t[1] for t in tiles]), origins, size)
    true = flow_tiles.stitch(np.stack([t[2] for t in tiles]), origins, size)
    # Every tile covering a pixel holds the same 0/1 validity, so its average is that value.
    valid = flow_tiles.stitch(np.stack([t[3][..., None] for t in tiles]), origins, size)[..., 0]
    sums = error_sums(pred, true, valid > 0.5)
    for key, value in sums.items():
      self._sums[key] = self._sums.get(key, 0.0) + float(value)
    if sums["count"] > 0:
      self._sums["pairs"] += 1
      self._sums["image_epe_sum"] += float(sums["epe_sum"] / sums["count"])

  def result(self) -> dict[str, float]:
    if self._open:
      raise ValueError(f"evaluation ended with pairs {sorted(self._open)[:5]} missing tiles")
    keys = sorted(self._sums)
    totals = base.allgather_rows(np.array([[self._sums[k] for k in keys]])).sum(axis=0)
    sums = dict(zip(keys, totals.tolist(), strict=True))
    count, pairs = sums.pop("count"), sums.pop("pairs")
    image_epe = sums.pop("image_epe_sum") / max(pairs, 1.0)
    result = {f"eval/{k}": v for k, v in _rates(sums, max(count, 1.0)).items()}
    return {**result, "eval/epe_per_image": image_epe, "eval/count": count, "eval/pairs": pairs}
