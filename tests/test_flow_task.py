"""The optical-flow task: end-point error, outlier rates, Fl-all, and tiled evaluation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perceiver_jax import tasks
from perceiver_jax.tasks import flow as flow_task
from perceiver_jax.tools import flow_tiles


def test_error_sums_by_hand():
  true = np.zeros((1, 2, 3, 2), np.float32)
  true[..., 0] = 100.0  # long flow: 5% is 5 px
  pred = true.copy()
  # Errors (EPE): 0, 1.5, 3.5 (not Fl: <= 5% of 100), 6 (Fl), 0 (invalid), 10 (invalid).
  pred[0, 0, 1] += (1.5, 0.0)
  pred[0, 0, 2] += (0.0, 3.5)
  pred[0, 1, 0] += (6.0, 0.0)
  pred[0, 1, 2] += (6.0, 8.0)
  valid = np.array([[[1, 1, 1], [1, 0, 0]]], np.float32)
  sums = flow_task.error_sums(pred, true, valid)
  assert sums["count"] == 4
  np.testing.assert_allclose(sums["epe_sum"], 0 + 1.5 + 3.5 + 6, rtol=1e-6)
  assert (sums["outliers_1px_sum"], sums["outliers_3px_sum"], sums["outliers_5px_sum"]) == (3, 2, 1)
  assert sums["fl_all_sum"] == 1
  # Short flow: 3.5 px of error on a 10 px flow is a KITTI outlier (> 3 px and > 5%).
  jax_sums = flow_task.error_sums(jnp.asarray(pred / 10), jnp.asarray(true / 10), valid)
  assert isinstance(jax_sums["epe_sum"], jax.Array)
  np.testing.assert_allclose(jax_sums["epe_sum"], 1.1, rtol=1e-5)
  assert float(jax_sums["fl_all_sum"]) == 0  # every error is now below 3 px


def _batch(pred_shift=(0.0, 0.0), valid_frac=1.0, seed=0):
  rng = np.random.default_rng(seed)
  true = rng.normal(0, 3, (2, 4, 5, 2)).astype(np.float32)
  valid = (rng.random((2, 4, 5)) < valid_frac).astype(np.float32)
  return true + np.asarray(pred_shift, np.float32), {"labels": {"flow": true, "valid": valid}}


def test_loss_is_the_mean_epe_over_valid_pixels_and_has_finite_gradients():
  task = tasks.get(tasks.default_config("flow"))
  pred, batch = _batch((2.4, 3.2), valid_frac=0.6)
  loss, metrics = task.loss(jnp.asarray(pred), batch)
  np.testing.assert_allclose(loss, 4.0, rtol=1e-5)
  np.testing.assert_allclose(metrics["epe"], 4.0, rtol=1e-5)
  assert float(metrics["outliers_3px"]) == 1.0 and float(metrics["outliers_5px"]) == 0.0
  # At an exact prediction the loss is 0 and its gradient finite (no sqrt(0) blow-up).
  exact, _ = _batch()
  grad = jax.grad(lambda p: task.loss(p, batch)[0])(jnp.asarray(exact))
  assert np.all(np.isfinite(grad))
  np.testing.assert_allclose(task.loss(jnp.asarray(exact), batch)[0], 0.0, atol=1e-5)
  # Invalid pixels carry no loss and no gradient.
  grad = jax.grad(lambda p: task.loss(p, batch)[0])(jnp.asarray(pred))
  assert np.all(grad[batch["labels"]["valid"] == 0] == 0)


def _config(**fields):
  cfg = tasks.default_config("flow")
  cfg.update(fields)
  return cfg


def test_max_flow_leaves_long_flows_out_of_the_loss_only():
  task = tasks.get(_config(max_flow=50.0))
  true = np.zeros((1, 1, 2, 2), np.float32)
  true[0, 0, 1, 0] = 80.0  # beyond max_flow
  pred = true + np.array([1.0, 0.0], np.float32)
  batch = {"labels": {"flow": true, "valid": np.ones((1, 1, 2), np.float32)}}
  pred[0, 0, 1, 0] += 9.0  # 10 px of error on the long flow
  loss, metrics = task.loss(jnp.asarray(pred), batch)
  np.testing.assert_allclose(loss, 1.0, rtol=1e-5)  # the short flow's error alone
  np.testing.assert_allclose(metrics["epe"], 5.5, rtol=1e-5)  # both pixels
  with pytest.raises(ValueError, match="config.task.max_flow=0.0"):
    tasks.get(_config(max_flow=0.0))


def _tile_rows(fields, sizes, tile, overlap=4, seed=0, shift=(0.0, 0.0)):
  """Tile rows (as the data layer makes them) of pairs of `sizes`, and their ground truth."""
  rng = np.random.default_rng(seed)
  rows, truths = [], []
  for pair, size in enumerate(sizes):
    true = rng.normal(0, 4, (*size, 2)).astype(np.float32)
    valid = (rng.random(size) < 0.7).astype(np.float32)
    truths.append((true, valid))
    origins = flow_tiles.tile_origins(size, tile, overlap)
    for t, (y, x) in enumerate(origins):
      crop = (slice(y, y + tile[0]), slice(x, x + tile[1]))
      rows.append(
        {
          "pred": true[crop] + np.asarray(shift, np.float32),
          "flow": true[crop],
          "valid": valid[crop],
          "tile": np.array([pair, t, len(origins), y, x, *size], np.int32),
        }
      )
  return rows, truths


def _feed(evaluator, rows, devices=2, per_device=3):
  """Feeds rows in batches [devices, per_device, ...] as pmapped evaluation does, the last
  batch padded with mask-0 rows."""
  local = devices * per_device
  rows = rows + [None] * (-len(rows) % local)
  for start in range(0, len(rows), local):
    chunk = rows[start : start + local]
    real = [r for r in chunk if r is not None]
    filler = {k: np.zeros_like(v) for k, v in real[0].items()}
    chunk = [r if r is not None else filler for r in chunk]

    def stack(key, chunk=chunk):
      return np.stack([r[key] for r in chunk]).reshape(devices, per_device, *chunk[0][key].shape)

    mask = np.array([r is not filler for r in chunk], np.float32).reshape(devices, per_device)
    labels = {k: stack(k) for k in ("flow", "valid", "tile")}
    evaluator.add(stack("pred"), {"labels": labels, "mask": mask})


def test_tiled_evaluation_scores_whole_pairs():
  task = tasks.get(tasks.default_config("flow"))
  sizes, tile = [(10, 13), (8, 8), (12, 9)], (8, 8)
  rows, truths = _tile_rows(flow_task.TILE_FIELDS, sizes, tile, shift=(0.54, 0.72))
  evaluator = task.evaluator()
  _feed(evaluator, rows)
  result = evaluator.result()
  count = sum(v.sum() for _, v in truths)
  assert result["eval/count"] == count and result["eval/pairs"] == 3
  np.testing.assert_allclose(result["eval/epe"], 0.9, rtol=1e-5)  # |(0.54, 0.72)| everywhere
  np.testing.assert_allclose(result["eval/epe_per_image"], 0.9, rtol=1e-5)
  assert result["eval/outliers_1px"] == 0.0 and result["eval/fl_all"] == 0.0


def test_tiled_evaluation_stitches_per_tile_predictions_like_the_cli():
  """Per-tile predictions that disagree on the overlaps are averaged with the CLI's weights."""
  task = tasks.get(tasks.default_config("flow"))
  size, tile = (11, 15), (8, 8)
  rows, truths = _tile_rows(flow_task.TILE_FIELDS, [size], tile)
  rng = np.random.default_rng(5)
  for row in rows:
    row["pred"] = rng.normal(0, 2, row["pred"].shape).astype(np.float32)
  evaluator = task.evaluator()
  _feed(evaluator, rows[::1], devices=1, per_device=4)
  origins = [tuple(r["tile"][3:5]) for r in rows]
  stitched = flow_tiles.stitch(np.stack([r["pred"] for r in rows]), origins, size)
  true, valid = truths[0]
  epe = np.sqrt(((stitched - true) ** 2).sum(-1))
  expected = (epe * valid).sum() / valid.sum()
  np.testing.assert_allclose(evaluator.result()["eval/epe"], expected, rtol=1e-5)


def test_an_incomplete_pair_is_an_error():
  task = tasks.get(tasks.default_config("flow"))
  rows, _ = _tile_rows(flow_task.TILE_FIELDS, [(10, 13)], (8, 8))
  evaluator = task.evaluator()
  _feed(evaluator, rows[:-1], devices=1, per_device=2)
  with pytest.raises(ValueError, match=r"pairs \[0\] missing tiles"):
    evaluator.result()
