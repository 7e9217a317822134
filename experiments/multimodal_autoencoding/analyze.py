"""Results of the miniature multimodal autoencoders: PSNR against constant predictions at two
latent counts, reconstructed frames beside the inputs, audio and learning curves.

  PYTHONPATH=. python experiments/multimodal_autoencoding/analyze.py \
      --workdirs=/tmp/ae_l64,/tmp/ae_l16 [--results_dir=experiments/multimodal_autoencoding]

Each run's settings are read back from WORKDIR/config.json (`configs/kinetics_autoencoding.py:
mini` with the run's overrides) and its newest checkpoint is loaded. Every held-out clip of
the run's evaluation split (generated clips the training never saw) is reconstructed whole
by the code of `python -m perceiver_jax.autoencode` (`tools.autoencode.window_model`, the
label masked), and scored per clip with the task's PSNR (peak 1), averaged over clips. The
PSNRs must agree with the trainer's own evaluation in WORKDIR/final.json (to 0.01 dB).
Constant predictions, which know nothing of a clip: for video, the mean colour of the
training clips at every pixel ("constant colour") and the mean training clip, pixel by pixel
and frame by frame ("mean clip"); for audio, silence (the mean of the training audio, 0 to
three decimals). Compression: video inputs x input width / (latents x latent width), the
paper's measure (88x for the release).

Writes RESULTS_DIR/results.json, reconstructions.png (input frames and each run's
reconstruction of held-out clips), audio.png (a stretch of waveform) and learning_curve.png
(the evaluations during training), and prints a summary table.
"""

from __future__ import annotations

import json
import os
import sys

import matplotlib
import numpy as np
from absl import app
from absl import flags

matplotlib.use("Agg")
from matplotlib import pyplot as plt  # noqa: E402

from configs import kinetics_autoencoding  # noqa: E402
from perceiver_jax import metrics  # noqa: E402
from perceiver_jax import model  # noqa: E402
from perceiver_jax.data import av_procedural  # noqa: E402
from perceiver_jax.data import datasets  # noqa: E402
from perceiver_jax.modalities import audio_video_label  # noqa: E402
from perceiver_jax.tools import autoencode  # noqa: E402
from perceiver_jax.tools import predict  # noqa: E402

BASE = "configs/kinetics_autoencoding.py:mini"
EVALUATE_TOLERANCE_DB = 0.01  # the trainer's evaluation and this one differ by rounding only
TRAIN_CLIPS_FOR_MEANS = 512


def run_config(workdir: str):
  return metrics.read_config(workdir, kinetics_autoencoding.get_config("mini"), BASE)


def _data(config):
  facts = datasets.ModelFacts(
    model.input_shapes(config.model), config.model.num_classes, 0, model.output_points(config.model)
  )
  return datasets.load(config, facts)


def held_out_clips(config) -> dict[str, np.ndarray]:
  """Every clip of the evaluation split: image [N, T, H, W, 3], audio [N, S], class [N]."""
  parts = {"image": [], "audio": [], "class": []}
  for batch in _data(config).eval_batches((1, config.eval_batch_size)):
    real = batch["mask"].reshape(-1) > 0
    parts["image"].append(
      batch["inputs"]["image"].reshape(-1, *batch["inputs"]["image"].shape[2:])[real]
    )
    parts["audio"].append(
      batch["inputs"]["audio"].reshape(-1, batch["inputs"]["audio"].shape[-1])[real]
    )
    parts["class"].append(batch["labels"]["class"].reshape(-1)[real])
  return {key: np.concatenate(values) for key, values in parts.items()}


def training_means(config) -> dict[str, np.ndarray]:
  """The mean training clip [T, H, W, 3], mean colour [3] and mean audio sample."""
  data, total, count = _data(config), None, 0
  audio_sum = 0.0
  for batch in data.train_batches(0, (1, config.batch_size)):
    image = batch["inputs"]["image"].reshape(-1, *batch["inputs"]["image"].shape[2:])
    total = image.sum(axis=0) if total is None else total + image.sum(axis=0)
    audio_sum += float(batch["inputs"]["audio"].mean()) * len(image)
    count += len(image)
    if count >= TRAIN_CLIPS_FOR_MEANS:
      break
  mean_clip = total / count
  return {"clip": mean_clip, "colour": mean_clip.mean(axis=(0, 1, 2)), "audio": audio_sum / count}


def compression(model_cfg) -> float:
  """Video inputs x input width / (latents x latent width)."""
  inputs = audio_video_label.num_inputs(model_cfg)["image"]
  return (
    inputs
    * audio_video_label.input_channels(model_cfg)
    / (model_cfg.num_latents * model_cfg.num_latent_channels)
  )


def score_run(workdir: str, clips: dict) -> tuple[dict, dict]:
  """(scores of the run's newest checkpoint, reconstructions {image, audio} of every clip)."""
  config = run_config(workdir)
  geo = autoencode.geometry(config.model)
  params, state = predict.load_checkpoint(config.model, workdir)
  fn = autoencode.window_model(
    model.build_model(config.model), params, state, geo, config.task.eval_chunks
  )
  images, sounds, logits = [], [], []
  for frames, audio in zip(clips["image"], clips["audio"], strict=True):
    image, sound, label = fn(frames, audio)
    images.append(image)
    sounds.append(sound)
    logits.append(label)
  images, sounds, logits = np.stack(images), np.stack(sounds), np.stack(logits)
  final = metrics.read_final(workdir) or {}
  scores = {
    "latents": config.model.num_latents,
    "latent_channels": config.model.num_latent_channels,
    "compression": compression(config.model),
    "parameters": model.count_params(model.param_shapes(config.model)[0]),
    "steps": final.get("step"),
    "train_seconds": final.get("seconds"),
    "image_psnr": mean_psnr(images, clips["image"]),
    "audio_psnr": mean_psnr(sounds, clips["audio"]),
    "top1": float(np.mean(np.argmax(logits, axis=-1) == clips["class"])),
    "trainer_eval": {k: final.get(f"eval/{k}") for k in ("image_psnr", "audio_psnr", "top1")},
  }
  return scores, {"image": images, "audio": sounds}


def mean_psnr(predicted: np.ndarray, target: np.ndarray) -> float:
  """The per-clip PSNR (peak 1) averaged over clips; `predicted` broadcasts against target."""
  predicted = np.broadcast_to(predicted, target.shape)
  return float(np.mean([autoencode.psnr(p, t) for p, t in zip(predicted, target, strict=True)]))


def check_evaluate(results: dict) -> None:
  """The trainer's evaluation of each run must agree with this one."""
  for run in results["runs"]:
    for key in ("image_psnr", "audio_psnr"):
      trainer = run["trainer_eval"][key]
      if trainer is not None and abs(trainer - run[key]) > EVALUATE_TOLERANCE_DB:
        raise ValueError(f"{key}: this analysis {run[key]:.4f} dB, the trainer's {trainer:.4f} dB")


def plot_reconstructions(clips, recons, runs, path: str, count: int = 3) -> None:
  """The first held-out clips of `count` different shapes, each input above its
  reconstructions."""
  frames = clips["image"].shape[1]
  rows = count * (1 + len(runs))
  fig, axes = plt.subplots(rows, frames, figsize=(frames * 1.1, rows * 1.15))
  shapes = clips["class"] % len(av_procedural.SHAPES)
  shown = [int(np.flatnonzero(shapes == s)[0]) for s in np.unique(shapes)[:count]]
  for i, c in enumerate(shown):
    sources = [(f"input ({clips['class'][c]})", clips["image"][c])] + [
      (f"{r['latents']} latents", rec["image"][c]) for r, rec in zip(runs, recons, strict=True)
    ]
    for s, (name, video) in enumerate(sources):
      row = i * len(sources) + s
      for t in range(frames):
        ax = axes[row, t]
        ax.imshow(np.clip(video[t], 0, 1), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        if t == 0:
          ax.set_ylabel(name, fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def plot_audio(clips, recons, runs, path: str, samples: int = 512) -> None:
  fig, ax = plt.subplots(figsize=(9, 3))
  start = clips["audio"].shape[1] // 2
  ax.plot(clips["audio"][0, start : start + samples], "k", lw=1.5, label="input")
  for run, rec in zip(runs, recons, strict=True):
    ax.plot(rec["audio"][0, start : start + samples], lw=1, label=f"{run['latents']} latents")
  ax.set_xlabel("sample")
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def plot_learning_curve(workdirs, runs, baselines, path: str) -> None:
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
  for workdir, run in zip(workdirs, runs, strict=True):
    records = [
      r
      for r in metrics.read_metrics(os.path.join(workdir, "metrics.jsonl"))
      if "eval/image_psnr" in r
    ]
    steps = [r["step"] for r in records]
    for ax, key in zip(axes, ("image_psnr", "audio_psnr"), strict=True):
      ax.plot(steps, [r[f"eval/{key}"] for r in records], "o-", label=f"{run['latents']} latents")
  for ax, key, title in zip(
    axes, ("image", "audio"), ("video PSNR (dB)", "audio PSNR (dB)"), strict=True
  ):
    for name, value in baselines[key].items():
      ax.axhline(value, ls="--", lw=1, color="grey")
      ax.annotate(name, (0.01, value), xycoords=("axes fraction", "data"), fontsize=7, va="bottom")
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def analyze(workdirs: list[str], results_dir: str) -> dict:
  config = run_config(workdirs[0])
  clips = held_out_clips(config)
  means = training_means(config)
  baselines = {
    "image": {
      "constant colour": mean_psnr(means["colour"], clips["image"]),
      "mean clip": mean_psnr(means["clip"], clips["image"]),
    },
    "audio": {"silence": mean_psnr(np.float32(means["audio"]), clips["audio"])},
    "top1": {"chance": 1.0 / config.model.num_classes},
  }
  runs, recons = [], []
  for workdir in workdirs:
    scores, recon = score_run(workdir, clips)
    runs.append(scores)
    recons.append(recon)
  results = {"held_out_clips": len(clips["class"]), "baselines": baselines, "runs": runs}
  check_evaluate(results)
  os.makedirs(results_dir, exist_ok=True)
  with open(os.path.join(results_dir, "results.json"), "w") as f:
    json.dump(results, f, indent=2)
  plot_reconstructions(clips, recons, runs, os.path.join(results_dir, "reconstructions.png"))
  plot_audio(clips, recons, runs, os.path.join(results_dir, "audio.png"))
  plot_learning_curve(workdirs, runs, baselines, os.path.join(results_dir, "learning_curve.png"))
  return results


def summary_table(results: dict) -> str:
  lines = [
    "| predictor | compression | video PSNR (dB) | audio PSNR (dB) | top-1 (label masked) |",
    "|---|---:|---:|---:|---:|",
  ]
  for run in results["runs"]:
    lines.append(
      f"| {run['latents']} x {run['latent_channels']} latents | {run['compression']:.1f}x | "
      f"{run['image_psnr']:.2f} | {run['audio_psnr']:.2f} | {100 * run['top1']:.1f}% |"
    )
  base = results["baselines"]
  for name, value in base["image"].items():
    lines.append(f"| {name} | - | {value:.2f} | - | - |")
  lines.append(f"| silence | - | - | {base['audio']['silence']:.2f} | - |")
  lines.append(f"| chance | - | - | - | {100 * base['top1']['chance']:.1f}% |")
  return "\n".join(lines)


def main(argv):
  del argv
  try:
    results = analyze(_WORKDIRS.value, _RESULTS_DIR.value)
  except (ValueError, OSError) as e:
    sys.exit(f"error: {e}")
  print(summary_table(results))


if __name__ == "__main__":
  # Flags exist only when this runs as a script, so that tests can import its functions
  # next to other modules that define flags of the same names.
  _WORKDIRS = flags.DEFINE_list(
    "workdirs", None, "Workdirs of configs/kinetics_autoencoding.py:mini runs.", required=True
  )
  _RESULTS_DIR = flags.DEFINE_string("results_dir", os.path.dirname(__file__), "Where results go.")
  app.run(main)
