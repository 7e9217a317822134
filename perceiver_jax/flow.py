"""`python -m perceiver_jax.flow --config=configs/flow.py --checkpoint=... --frame1=A.png
--frame2=B.png --output=flow.flo [--visualize=flow.png]`: the optical flow of a frame pair of
any size by tiled inference, or with `--evaluate` a checkpoint's metrics on the config's
evaluation split (`tools.flow_inference`). A bad input ends with one `error:` line, exit 1."""

from __future__ import annotations

import json
import sys
import time

import jax
import numpy as np
from absl import app
from absl import flags
from ml_collections import config_flags

from perceiver_jax import atomic
from perceiver_jax import model
from perceiver_jax.tools import flow_inference as tool
from perceiver_jax.tools import flow_tiles
from perceiver_jax.tools import predict

_CONFIG = config_flags.DEFINE_config_file("config", None, "Flow config, e.g. configs/flow.py.")
_CHECKPOINT = flags.DEFINE_string(
  "checkpoint",
  None,
  "Weights in any format: the released pickle (bare or {'params', 'state'}), a "
  ".safetensors, a transformers folder, a checkpoint directory, or a training workdir.",
)
_FRAME1 = flags.DEFINE_string("frame1", None, "First frame (PNG, JPEG, PPM, ...).")
_FRAME2 = flags.DEFINE_string("frame2", None, "Second frame, the size of the first.")
_OUTPUT = flags.DEFINE_string("output", None, "Flow file: .flo (Middlebury) or .png (KITTI).")
_VISUALIZE = flags.DEFINE_string("visualize", None, "Optional .png for the colour-coded flow.")
_BATCH_SIZE = flags.DEFINE_integer(
  "batch_size", 1, "Tiles per model call (more is faster where memory allows)."
)
_OVERLAP = flags.DEFINE_integer(
  "overlap", None, "Minimum tile overlap in pixels (default: config.data.tile_overlap)."
)
_EVALUATE = flags.DEFINE_bool(
  "evaluate", False, "Evaluate on config.data's evaluation split instead of one pair."
)
_METRICS_JSON = flags.DEFINE_string("metrics_json", None, "With --evaluate: also write JSON here.")


def _check_flags() -> None:
  if not _CHECKPOINT.value:
    raise ValueError("--checkpoint is required")
  pair_flags = {"frame1": _FRAME1.value, "frame2": _FRAME2.value, "output": _OUTPUT.value}
  if _EVALUATE.value:
    given = [f"--{name}" for name, value in pair_flags.items() if value] + (
      ["--visualize"] if _VISUALIZE.value else []
    )
    if given:
      raise ValueError(f"--evaluate reads config.data's pairs; drop {', '.join(given)}")
  else:
    missing = [f"--{name}" for name, value in pair_flags.items() if not value]
    if _METRICS_JSON.value:
      raise ValueError("--metrics_json goes with --evaluate")
    if missing:
      raise ValueError(f"give {', '.join(missing)} (or --evaluate)")
    tool.check_output_paths(_OUTPUT.value, _VISUALIZE.value)


def main(argv) -> None:
  del argv
  config = _CONFIG.value
  try:
    if config is None:
      raise ValueError("--config is required, e.g. --config=configs/flow.py")
    _check_flags()
    predict.use_stored_model_config(config, _CHECKPOINT.value)
    tile = tool.model_tile(config.model)
    overlap = config.data.tile_overlap if _OVERLAP.value is None else _OVERLAP.value
    if not 0 <= overlap < min(tile):
      raise ValueError(
        f"--overlap={overlap}: must be in [0, {min(tile)}) for tiles of {tile[0]} x {tile[1]}"
      )
    if not _EVALUATE.value:
      frame1, frame2 = tool.read_pair(_FRAME1.value, _FRAME2.value, tile)
    params, state = predict.load_checkpoint(config.model, _CHECKPOINT.value)
    fn = tool.tile_model(model.build_model(config.model), params, state, _BATCH_SIZE.value)
    start = time.perf_counter()
    if _EVALUATE.value:
      metrics = tool.evaluate(fn, config, overlap, _BATCH_SIZE.value)
      if _METRICS_JSON.value:
        with atomic.atomic_write(_METRICS_JSON.value, "w") as f:
          json.dump(metrics, f, indent=2, sort_keys=True)
    else:
      flow = tool.predict_pair(fn, frame1, frame2, tile, overlap, _BATCH_SIZE.value)
      tool.write_outputs(flow, _OUTPUT.value, _VISUALIZE.value)
    seconds = time.perf_counter() - start
  except Exception as e:  # One line for any bad input, never a traceback.
    # Multi-line messages (a checkpoint that does not fit the model lists every key) open
    # with a summary line; that line is the error.
    print(f"error: {(str(e) or type(e).__name__).splitlines()[0]}", file=sys.stderr)
    sys.exit(1)
  if _EVALUATE.value:
    for key in sorted(metrics):
      print(f"{key} {metrics[key]:.6g}")
    return
  height, width = flow.shape[:2]
  num_tiles = len(flow_tiles.tile_origins((height, width), tile, overlap))
  largest = float(np.hypot(flow[..., 0], flow[..., 1]).max())
  print(
    f"{height} x {width}: {num_tiles} tiles of {tile[0]} x {tile[1]} on "
    f"{jax.default_backend()}, max |flow| {largest:.3f} px, {seconds:.2f} s -> {_OUTPUT.value}"
  )


if __name__ == "__main__":
  app.run(main)
