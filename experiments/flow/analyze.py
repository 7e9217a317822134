"""Results of the miniature optical-flow run: the model against two baselines on held-out
generated pairs, example flows and the learning curve.

  PYTHONPATH=. python experiments/flow/analyze.py --workdir=/tmp/flow_mini \
      [--results_dir=experiments/flow] [--examples=4]

The run's settings are read back from WORKDIR/config.json (`configs/flow.py:mini` with
whatever `--config.*` overrides the run had), and its newest checkpoint is loaded. Every
held-out pair of the run's evaluation split (generated pairs larger than one tile) is scored,
over its valid pixels, with the task's error sums (`tasks.flow.error_sums`) for three methods:
- the model, by tiled inference (`tools.flow_inference.predict_pair`, the code of
  `python -m perceiver_jax.flow`); its EPE is checked against the trainer's own tiled
  evaluation (`flow_inference.evaluate`), which must agree to 1e-4 relative;
- zero flow: its EPE is the mean length of the true flow;
- one global affine motion fitted to the pair (`global_affine_flow`), a classical reference
  that knows nothing of shapes: Lucas-Kanade over the whole image, where the brightness
  constancy I2(p + f(p)) = I1(p) is linearised and solved by least squares for the six
  parameters of f(p) = (a0 + a1 x + a2 y, a3 + a4 x + a5 y), refined by Gauss-Newton steps
  that warp frame 2 back bilinearly.
The generated background moves by one similarity, an affine motion: on a pair without shapes
the affine reference is exact to a few hundredths of a pixel. With shapes it misses their
motion, and since the fit is plain least squares over every pixel (no robust weighting), the
shapes also pull it off the background's motion. Each method is also scored on two regions of
every pair, found from the true flow alone (`dominant_motion_mask`): "background", the pixels
that follow the pair's dominant affine motion, and "shapes", the others.

Writes RESULTS_DIR/results.json, RESULTS_DIR/flow_examples.png (frames, true and predicted
flow, error map of the first `--examples` pairs) and RESULTS_DIR/learning_curve.png (from
WORKDIR/metrics.jsonl), and prints a summary table.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable

import matplotlib
import ml_collections
import numpy as np
from absl import app
from absl import flags

matplotlib.use("Agg")
from matplotlib import pyplot as plt  # noqa: E402

from configs import flow as flow_config  # noqa: E402
from perceiver_jax import metrics  # noqa: E402
from perceiver_jax import model  # noqa: E402
from perceiver_jax.data import flow as flow_data  # noqa: E402
from perceiver_jax.tasks import flow as flow_task  # noqa: E402
from perceiver_jax.tools import flow_colors  # noqa: E402
from perceiver_jax.tools import flow_inference  # noqa: E402
from perceiver_jax.tools import flow_tiles  # noqa: E402
from perceiver_jax.tools import predict  # noqa: E402

METHODS = ("model", "zero_flow", "global_affine")
LABELS = {"zero_flow": "zero flow", "global_affine": "global affine (Lucas-Kanade)"}
REGIONS = ("all", "background", "shapes")
# The model's EPE and that of the trainer's evaluation may differ by float32 rounding only.
EVALUATE_RTOL = 1e-4
# A pixel follows the dominant affine motion if its true flow is within this many pixels of it.
BACKGROUND_TOLERANCE = 0.01
FlowFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def run_config(workdir: str) -> ml_collections.ConfigDict:
  """The run's config: `configs/flow.py:mini` with WORKDIR/config.json applied on top
  (`metrics.read_config`)."""
  return metrics.read_config(workdir, flow_config.get_config("mini"), "configs/flow.py:mini")


def _affine_basis(size: tuple[int, int]) -> np.ndarray:
  """float64 [H, W, 3]: (1, x, y) at each pixel, x and y centred and scaled to about [-1, 1]
  (well-conditioned least squares)."""
  height, width = size
  y, x = np.mgrid[0:height, 0:width].astype(np.float64)
  scale = max(height, width) / 2
  return np.stack(
    [np.ones_like(x), (x - (width - 1) / 2) / scale, (y - (height - 1) / 2) / scale], -1
  )


def dominant_motion_mask(flow: np.ndarray, tolerance: float = BACKGROUND_TOLERANCE) -> np.ndarray:
  """bool [H, W]: the pixels whose flow [H, W, 2] follows the field's dominant affine motion.

  A trimmed least-squares fit: the affine field is fitted to all pixels, then repeatedly to
  the half of them (or more: all within `tolerance`) that it fits best. Where the generated
  background covers most of the image, as it does, the fit converges to the background's
  exact motion, and the pixels within `tolerance` pixels of it are the background.
  """
  basis = _affine_basis(flow.shape[:2]).reshape(-1, 3)  # [N, 3]
  target = np.asarray(flow, np.float64).reshape(-1, 2)  # [N, 2]
  keep = np.ones(len(target), bool)
  for _ in range(8):
    coefficients, *_ = np.linalg.lstsq(basis[keep], target[keep], rcond=None)  # [3, 2]
    residual = np.linalg.norm(basis @ coefficients - target, axis=-1)  # [N]
    keep = residual <= max(np.median(residual), tolerance)
  return (residual <= tolerance).reshape(flow.shape[:2])


def _bilinear(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """image [H, W] at points (x, y) [H, W], bilinearly (clamped at the border), and bool
  [H, W]: which points lie inside the image."""
  height, width = image.shape
  inside = (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)
  x, y = np.clip(x, 0, width - 1), np.clip(y, 0, height - 1)
  x0 = np.minimum(np.floor(x).astype(np.intp), width - 2)
  y0 = np.minimum(np.floor(y).astype(np.intp), height - 2)
  fx, fy = x - x0, y - y0
  top = image[y0, x0] + fx * (image[y0, x0 + 1] - image[y0, x0])
  bottom = image[y0 + 1, x0] + fx * (image[y0 + 1, x0 + 1] - image[y0 + 1, x0])
  return top + fy * (bottom - top), inside


def global_affine_flow(frame1: np.ndarray, frame2: np.ndarray, iterations: int = 5) -> np.ndarray:
  """float32 [H, W, 2]: the one affine flow field that best explains frame 2 from frame 1.

  Frames [H, W, 3] (0..255) are made grey (the channel mean). Each Gauss-Newton step warps
  frame 2 back by the current flow f (bilinearly), I2w(p) = I2(p + f(p)), and solves the
  linearised brightness constancy Ix du + Iy dv + (I2w - I1) = 0 over the pixels whose warped
  position lies in the image for the six-parameter update of f, by least squares; Ix, Iy are
  central differences of the average (I1 + I2w) / 2. The first step, from f = 0, is classical
  Lucas-Kanade over the whole image.
  """
  grey1 = np.asarray(frame1, np.float64).mean(-1)  # [H, W]
  grey2 = np.asarray(frame2, np.float64).mean(-1)
  height, width = grey1.shape
  basis = _affine_basis((height, width))  # [H, W, 3]
  y, x = np.mgrid[0:height, 0:width].astype(np.float64)
  coefficients = np.zeros((2, 3))  # u = coefficients[0] . basis, v = coefficients[1] . basis
  for _ in range(iterations):
    flow = basis @ coefficients.T  # [H, W, 2]
    warped, inside = _bilinear(grey2, x + flow[..., 0], y + flow[..., 1])
    grad_y, grad_x = np.gradient((grey1 + warped) / 2)
    design = np.concatenate([grad_x[..., None] * basis, grad_y[..., None] * basis], -1)
    update, *_ = np.linalg.lstsq(design[inside], (grey1 - warped)[inside], rcond=None)  # [6]
    coefficients += update.reshape(2, 3)
  return (basis @ coefficients.T).astype(np.float32)


def _add(total: dict, sums: dict) -> None:
  for key, value in sums.items():
    total[key] = total.get(key, 0.0) + float(value)


def _rates(sums: dict) -> dict[str, float]:
  """{"epe", "outliers_{1,3,5}px", "fl_all": per valid pixel, "count": valid pixels}."""
  count = sums["count"]
  rates = {k[: -len("_sum")]: v / max(count, 1.0) for k, v in sums.items() if k != "count"}
  return {**rates, "count": count}


def score_pairs(
  source: flow_data.PairSource, model_flow: FlowFn, num_examples: int = 0
) -> tuple[dict, list[dict]]:
  """Scores the methods on every pair of `source`.

  Args:
    source: the held-out pairs.
    model_flow: (frame1, frame2) uint8 [H, W, 3] -> the model's flow [H, W, 2].
    num_examples: how many of the first pairs to return with their flows, for the figure.
  Returns:
    ({method: {region: rates}} for `METHODS` x `REGIONS` (see `_rates`), the examples:
    [{"frame1", "frame2", "flow", "valid", "model"}, ...]).
  """
  sums = {method: {region: {} for region in REGIONS} for method in METHODS}
  examples = []
  for i in range(source.num_pairs):
    sample = source.load(i)
    frame1, frame2, true = sample["frame1"], sample["frame2"], sample["flow"]
    valid = np.asarray(sample["valid"], bool)
    background = dominant_motion_mask(true)
    predictions = {
      "model": model_flow(frame1, frame2),
      "zero_flow": np.zeros_like(true),
      "global_affine": global_affine_flow(frame1, frame2),
    }
    regions = {"all": valid, "background": valid & background, "shapes": valid & ~background}
    for method, pred in predictions.items():
      for region, mask in regions.items():
        _add(sums[method][region], flow_task.error_sums(pred, true, mask))
    if i < num_examples:
      examples.append({**sample, "model": predictions["model"]})
  scores = {m: {r: _rates(sums[m][r]) for r in REGIONS} for m in METHODS}
  return scores, examples


def _colour_key(size: int = 65) -> np.ndarray:
  """uint8 [size, size, 3]: the colour coding of a radial field, white outside the disc."""
  centre = (size - 1) / 2
  y, x = np.mgrid[0:size, 0:size].astype(np.float64)
  radial = np.stack([x - centre, y - centre], -1)
  key = flow_colors.flow_to_rgb(radial, max_magnitude=centre)
  key[np.hypot(x - centre, y - centre) > centre] = 255
  return key


def plot_examples(examples: list[dict], path: str) -> None:
  """One row per example: frame 1 | frame 2 | true flow | predicted flow | end-point error,
  and the colour key beside the first row."""
  rows = len(examples)
  fig = plt.figure(figsize=(13.0, 1.9 * rows + 0.7))
  grid = fig.add_gridspec(rows, 6, width_ratios=[1, 1, 1, 1, 1.25, 0.55], wspace=0.15)
  for row, ex in enumerate(examples):
    true, pred = ex["flow"], ex["model"]
    valid = np.asarray(ex["valid"], bool)
    error = np.linalg.norm(pred - true, axis=-1) * valid  # [H, W]
    epe = float(error.sum() / max(valid.sum(), 1))
    # One colour scale per row, the true flow's: equal lengths look equally saturated.
    scale = max(float(np.linalg.norm(true, axis=-1).max()), 1e-3)
    panels = [
      (ex["frame1"], "frame 1"),
      (ex["frame2"], "frame 2"),
      (flow_colors.flow_to_rgb(true, scale), f"true flow (max {scale:.1f} px)"),
      (flow_colors.flow_to_rgb(pred, scale), "predicted flow"),
    ]
    for col, (image, title) in enumerate(panels):
      ax = fig.add_subplot(grid[row, col])
      ax.imshow(image)
      ax.set_title(title, fontsize=8)
      ax.set(xticks=[], yticks=[])  # the frame stays: white is a flow colour
    ax = fig.add_subplot(grid[row, 4])
    shown = ax.imshow(error, cmap="magma", vmin=0)
    ax.set_title(f"end-point error, EPE {epe:.2f} px", fontsize=8)
    ax.set(xticks=[], yticks=[])
    colorbar = fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.03)
    colorbar.ax.tick_params(labelsize=7)
    ax = fig.add_subplot(grid[row, 5])
    ax.axis("off")
    if row == 0:
      ax.imshow(_colour_key())
      ax.set_title("colour key", fontsize=8)
  fig.text(
    0.5,
    0.01,
    "Flow colour: direction = hue (right red, down yellow, left blue, up violet), "
    "length = saturation up to the row's longest true flow; white = no motion. "
    "Error in pixels.",
    ha="center",
    fontsize=8,
  )
  fig.subplots_adjust(
    left=0.01, right=0.99, top=1 - 0.35 / fig.get_figheight(), bottom=0.5 / fig.get_figheight()
  )
  fig.savefig(path, dpi=100)
  plt.close(fig)


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
  """The running mean of `values` over `window` records (len(values) - window + 1 of them)."""
  return np.convolve(values, np.ones(window) / window, mode="valid")


def plot_learning_curve(records: list[dict], scores: dict, path: str) -> None:
  """train/epe (raw, light, and smoothed) and eval/epe against the step, with the zero-flow
  and global-affine EPE of the held-out pairs as horizontal lines."""
  train = np.array([(r["step"], r["train/epe"]) for r in records if r.get("train/epe") is not None])
  evals = np.array([(r["step"], r["eval/epe"]) for r in records if r.get("eval/epe") is not None])
  fig, ax = plt.subplots(figsize=(7, 4))
  window = max(1, len(train) // 20)
  if window > 1:
    ax.plot(train[:, 0], train[:, 1], color="tab:blue", alpha=0.25, lw=0.8)
  if len(train):
    label = "train EPE" + (f" (running mean of {window} logs)" if window > 1 else "")
    ax.plot(train[window - 1 :, 0], _smooth(train[:, 1], window), color="tab:blue", label=label)
  if len(evals):
    ax.plot(evals[:, 0], evals[:, 1], "o-", color="tab:red", label="held-out EPE (tiled)")
  for method, style in (("zero_flow", "--"), ("global_affine", ":")):
    epe = scores[method]["all"]["epe"]
    ax.axhline(epe, ls=style, c="gray", label=f"{LABELS[method]}, held-out: {epe:.2f} px")
  ax.set(xlabel="step", ylabel="end-point error (px)", ylim=(0, None))
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def _checkpoint_step(workdir: str) -> int | None:
  directory = os.path.join(workdir, "checkpoints")
  steps = [int(n) for n in os.listdir(directory) if n.isdigit()] if os.path.isdir(directory) else []
  return max(steps, default=None)


def analyze(workdir: str, results_dir: str, num_examples: int = 4) -> dict:
  """Scores the run's newest checkpoint, writes the results and figures; returns the results
  (as written to RESULTS_DIR/results.json)."""
  config = run_config(workdir)
  tile = flow_inference.model_tile(config.model)
  overlap = config.data.tile_overlap
  source = flow_data.pair_source(config.data, "eval", tile)
  if not 0 <= num_examples <= source.num_pairs:
    raise ValueError(f"--examples={num_examples}: must be in [0, {source.num_pairs}]")
  size = tuple(source.size(0))
  # One held-out pair's tiles per model call: no padding in `predict_pair`.
  batch_size = len(flow_tiles.tile_origins(size, tile, overlap))
  params, state = predict.load_checkpoint(config.model, workdir)
  fn = flow_inference.tile_model(model.build_model(config.model), params, state, batch_size)

  def model_flow(frame1, frame2):
    return flow_inference.predict_pair(fn, frame1, frame2, tile, overlap, batch_size)

  scores, examples = score_pairs(source, model_flow, num_examples)
  evaluated = flow_inference.evaluate(fn, config, overlap, batch_size)
  metrics_path = os.path.join(workdir, metrics.METRICS_FILE)
  records = metrics.read_metrics(metrics_path) if os.path.exists(metrics_path) else []
  final = metrics.read_final(workdir) or {}
  labels = {"model": f"Perceiver IO ({config.variant})", **LABELS}
  background = scores["zero_flow"]["background"]["count"] / scores["zero_flow"]["all"]["count"]
  results = {
    "variant": config.variant,
    "checkpoint_step": _checkpoint_step(workdir),
    "training_steps": final.get("step"),
    "training_seconds": final.get("seconds"),
    "eval_pairs": source.num_pairs,
    "eval_size": list(size),
    "model_tile": list(tile),
    "tiles_per_pair": batch_size,
    "tile_overlap": overlap,
    "mean_flow_length": scores["zero_flow"]["all"]["epe"],
    "background_fraction": background,
    "methods": {m: {"label": labels[m], **scores[m]} for m in METHODS},
    "model_epe": scores["model"]["all"]["epe"],
    "evaluate_epe": evaluated["eval/epe"],
    "evaluate": evaluated,
    "eval_epe_curve": [[r["step"], r["eval/epe"]] for r in records if "eval/epe" in r],
  }
  os.makedirs(results_dir, exist_ok=True)
  with open(os.path.join(results_dir, "results.json"), "w") as f:
    json.dump(results, f, indent=2)
    f.write("\n")
  if examples:
    plot_examples(examples, os.path.join(results_dir, "flow_examples.png"))
  plot_learning_curve(records, scores, os.path.join(results_dir, "learning_curve.png"))
  return results


def check_evaluate(results: dict) -> None:
  """ValueError unless the model's EPE equals the trainer's evaluation to `EVALUATE_RTOL`."""
  mine, theirs = results["model_epe"], results["evaluate_epe"]
  if not abs(mine - theirs) <= EVALUATE_RTOL * abs(theirs):
    raise ValueError(
      f"model EPE {mine:.6f} by predict_pair differs from {theirs:.6f} by the trainer's "
      f"tiled evaluation (more than {EVALUATE_RTOL:g} relative)"
    )


def summary_table(results: dict) -> str:
  """The methods' EPE by region and outlier rates, as a Markdown table with a heading line."""
  height, width = results["eval_size"]
  lines = [
    f"{results['eval_pairs']} held-out pairs of {height} x {width} "
    f"(tiles of {results['model_tile'][0]} x {results['model_tile'][1]}), "
    f"step {results['checkpoint_step']}; background {100 * results['background_fraction']:.1f}%"
    f" of the pixels; mean true flow {results['mean_flow_length']:.3f} px",
    "",
    "| method | EPE | EPE background | EPE shapes | > 1 px | > 3 px |",
    "|---|---:|---:|---:|---:|---:|",
  ]
  for scores in results["methods"].values():
    lines.append(
      f"| {scores['label']} | {scores['all']['epe']:.3f} | {scores['background']['epe']:.3f}"
      f" | {scores['shapes']['epe']:.3f} | {100 * scores['all']['outliers_1px']:.1f}%"
      f" | {100 * scores['all']['outliers_3px']:.1f}% |"
    )
  lines.append(f"\ntrainer's tiled evaluation: EPE {results['evaluate_epe']:.3f}")
  return "\n".join(lines)


def main(argv):
  del argv
  try:
    results = analyze(_WORKDIR.value, _RESULTS_DIR.value, _EXAMPLES.value)
    print(summary_table(results))
    check_evaluate(results)
  except (ValueError, OSError) as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  # Flags exist only when this runs as a script, so that tests can import its functions
  # next to other modules that define flags of the same names.
  _WORKDIR = flags.DEFINE_string("workdir", None, "The training run's workdir.", required=True)
  _RESULTS_DIR = flags.DEFINE_string("results_dir", os.path.dirname(__file__), "Where results go.")
  _EXAMPLES = flags.DEFINE_integer(
    "examples", 4, "Held-out pairs shown in flow_examples.png (0: none)."
  )
  app.run(main)
