"""`python -m perceiver_jax.fill_mask --config=... --checkpoint=... --text=... --mask=...`: a
byte language model's guess at the hidden bytes of a sentence (`tools.fill_mask`)."""

from __future__ import annotations

import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from perceiver_jax import model
from perceiver_jax.tools import fill_mask as tool
from perceiver_jax.tools import predict

_CONFIG = config_flags.DEFINE_config_file("config", None, "Model config, e.g. configs/mlm.py.")
_CHECKPOINT = flags.DEFINE_string(
  "checkpoint",
  None,
  "Weights in any format: the released pickle (bare or {'params', 'state'}), a "
  ".safetensors, a transformers folder, a checkpoint directory or a training workdir.",
)
_TEXT = flags.DEFINE_string("text", None, "The sentence (UTF-8).")
_MASK = flags.DEFINE_string("mask", None, "Substring of --text whose bytes are hidden.")
_MASK_SPAN = flags.DEFINE_string(
  "mask_span", None, "START:END byte range of --text to hide (instead of --mask)."
)
_TOP_K = flags.DEFINE_integer("top_k", 0, "Also list the K most likely bytes per position.")


def main(argv) -> None:
  del argv
  cfg = _CONFIG.value
  try:
    if not _CHECKPOINT.value:
      raise ValueError("--checkpoint is required")
    predict.use_stored_model_config(cfg, _CHECKPOINT.value)
    if cfg.model.modality != "text":
      raise ValueError(f"config.model.modality={cfg.model.modality!r}: fill_mask needs 'text'")
    start, end = tool.mask_span(_TEXT.value or "", _MASK.value, _MASK_SPAN.value)
    tool.masked_ids(_TEXT.value, start, end, cfg.model.input_shape[0])  # length check first
    params, state = predict.load_checkpoint(cfg.model, _CHECKPOINT.value)
    forward = model.build_model(cfg.model)
    filled, alternatives = tool.fill_mask(
      forward, params, state, _TEXT.value, start, end, top_k=_TOP_K.value
    )
  except Exception as e:  # One line for any bad input, never a traceback.
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  print(filled)
  for offset, options in enumerate(alternatives):
    if options:
      listed = ", ".join(f"{byte!r} {p:.3f}" for byte, p in options)
      print(f"byte {start + offset}: {listed}")


if __name__ == "__main__":
  app.run(main)
