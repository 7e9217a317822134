"""`python -m perceiver_jax.autoencode --config=configs/kinetics_autoencoding.py
--checkpoint=video_autoencoding_checkpoint.pystate --input=clip.mp4 --output=recon.mp4`:
reconstructs a clip's video and audio with the multimodal autoencoder and predicts its class
(`tools.autoencode`).

The clip is read at the model's rate and size (25 fps, centre square resized to 224 x 224,
mono audio resampled to 48 kHz for the release), cut into whole windows of 16 frames, each
reconstructed in `--chunks` decoder calls; the reconstruction (video with its audio track) is
written to `--output` (.mp4, .mov or .mkv) only when complete. Prints the video and audio PSNR
over the whole windows and the top-k classes (softmax averaged over the windows, the label
masked). A clip shorter than one window or unreadable ends with one `error:` line, exit 1; so
does a clip without an audio track, unless `--silent_audio`, which feeds silence as its audio
(and reports no audio PSNR).
"""

from __future__ import annotations

import sys
import time

import jax
import numpy as np
from absl import app
from absl import flags
from ml_collections import config_flags

from perceiver_jax import model
from perceiver_jax.data import kinetics_classes
from perceiver_jax.tools import autoencode as tool
from perceiver_jax.tools import av_io
from perceiver_jax.tools import predict

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "Autoencoder config, e.g. configs/kinetics_autoencoding.py."
)
_CHECKPOINT = flags.DEFINE_string(
  "checkpoint",
  None,
  "Weights in any format: the released pickle (the bare mapping of "
  "video_autoencoding_checkpoint.pystate, or {'params', 'state'}), a .safetensors, a "
  "transformers folder, a checkpoint directory, or a training workdir.",
)
_INPUT = flags.DEFINE_string("input", None, "Video file with its audio (mp4, mkv, webm, ...).")
_OUTPUT = flags.DEFINE_string("output", None, "Reconstruction: .mp4, .mov or .mkv.")
_CHUNKS = flags.DEFINE_integer(
  "chunks", None, "Decoder calls per window (default: config.task.eval_chunks)."
)
_SILENT_AUDIO = flags.DEFINE_bool(
  "silent_audio", False, "Reconstruct a clip without an audio track, with silence as its audio."
)
_TOP_K = flags.DEFINE_integer("top_k", 5, "Classes to print.")


def class_names(num_classes: int) -> list[str]:
  if num_classes == kinetics_classes.NUM_CLASSES:
    return kinetics_classes.load_class_names()
  return [f"class_{i}" for i in range(num_classes)]


def main(argv) -> None:
  del argv
  config = _CONFIG.value
  try:
    if config is None:
      raise ValueError("--config is required, e.g. --config=configs/kinetics_autoencoding.py")
    for name, value in (("checkpoint", _CHECKPOINT.value), ("input", _INPUT.value)):
      if not value:
        raise ValueError(f"--{name} is required")
    predict.use_stored_model_config(config, _CHECKPOINT.value)
    geo = tool.geometry(config.model)
    output = _OUTPUT.value or ""
    if not output.lower().endswith(tuple(av_io.CONTAINERS)):
      raise ValueError(f"--output={output!r}: expected one of {sorted(av_io.CONTAINERS)}")
    chunks = config.task.eval_chunks if _CHUNKS.value is None else _CHUNKS.value
    if chunks < 1:
      raise ValueError(f"--chunks={chunks}: must be at least 1")
    windows = tool.read_windows(_INPUT.value, geo, silent_audio=_SILENT_AUDIO.value)
    params, state = predict.load_checkpoint(config.model, _CHECKPOINT.value)
    fn = tool.window_model(model.build_model(config.model), params, state, geo, chunks)
    start = time.perf_counter()
    recon = tool.reconstruct(fn, windows)
    seconds = time.perf_counter() - start
    tool.write(output, recon, geo)
  except Exception as e:  # One line for any bad input, never a traceback.
    print(f"error: {(str(e) or type(e).__name__).splitlines()[0]}", file=sys.stderr)
    sys.exit(1)
  count = len(windows.frames)
  print(
    f"{count} window(s) of {geo.num_frames} frames {geo.image_size}x{geo.image_size} at "
    f"{geo.fps} fps, {chunks} chunks each, on {jax.default_backend()}: {seconds:.1f} s -> {output}"
  )
  print(f"video PSNR {tool.psnr(recon.frames, windows.frames):.2f} dB")
  if windows.has_audio:
    print(f"audio PSNR {tool.psnr(recon.audio, windows.audio):.2f} dB")
  else:
    print("audio PSNR: none (the clip has no audio track; its audio input was silence)")
  probs = np.mean(np.asarray(jax.nn.softmax(recon.logits, axis=-1)), axis=0)
  names = class_names(geo.num_classes)
  for rank, index in enumerate(np.argsort(-probs, kind="stable")[: _TOP_K.value], start=1):
    print(f"top-{rank} {names[index]}: {probs[index]:.4f}")


if __name__ == "__main__":
  app.run(main)
