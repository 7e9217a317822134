"""Multimodal autoencoding (Perceiver IO on Kinetics): reconstruct a clip's video, audio and
label through the latent bottleneck.

Model outputs (decoder 'multimodal'): {"image": [b, O_i, 3] RGB of the decoded pixels,
"audio": [b, O_a, P] samples of the decoded audio patches (P samples each), "label": [b, K]
logits}. Batches (perceiver_jax/data/kinetics.py): inputs {"image" [b, T, H, W, 3] in [0, 1],
"audio" [b, S] in [-1, 1], "label" [b, K] one-hot}, labels {"class" [b]} and in training
the output points "image_points" [b, O_i], "audio_points" [b, O_a] drawn per example.

Training (the paper, Appendix I): each example decodes only its points, so memory does not
grow with the clip; the loss is
  image_weight * L1(video) + audio_weight * L1(audio) + label_weight * CE(label),
with the paper's weights 0.03, 1 and 0.0001 (its heavier class loss, weight 1, trades video
PSNR for accuracy). L1 is the mean absolute error over the decoded values; the label is
masked at the model's `mask_probs.label` (0.5) in training and always at evaluation.
Training metrics: the three terms, top-1 of the label, and the PSNR of the decoded points.

Evaluation reconstructs whole clips, `eval_chunks` consecutive slices of the output points of
each modality per decoder call (the release's colab decodes 128 chunks), and reports per clip,
averaged over clips: `eval/image_psnr` and `eval/audio_psnr` (10 log10(1 / MSE): the peak is 1
for video in [0, 1] and for audio amplitude in [-1, 1]), `eval/top1` and `eval/top5` of the
label logits (the label masked), and `eval/loss` with the training weights on whole clips.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from perceiver_jax.tasks import base

_MIN_MSE = 1e-10  # a perfect reconstruction's PSNR stays finite (100 dB)


def psnr(mse: jax.Array) -> jax.Array:
  """Peak signal-to-noise ratio in dB of a mean squared error, for a peak value of 1."""
  return -10.0 * jnp.log10(jnp.maximum(mse, _MIN_MSE))


def _targets(batch: base.Batch, image_points, audio_points, samples_per_patch: int):
  """The true values at the decoded points: image [b, O_i, 3], audio [b, O_a, P]."""
  video = batch["inputs"]["image"]
  pixels = video.reshape(video.shape[0], -1, 3)  # [b, T H W, 3]
  audio = batch["inputs"]["audio"]
  patches = audio.reshape(audio.shape[0], -1, samples_per_patch)  # [b, S / P, P]

  def gather(values, points):
    if points.ndim == 1:
      return values[:, points]
    return jnp.take_along_axis(values, points[:, :, None], axis=1)

  return gather(pixels, image_points), gather(patches, audio_points)


def _error_sums(outputs, image_true, audio_true, image_keep=1.0, audio_keep=1.0) -> dict:
  """Per-example sums [b] of |error| and error^2 of the decoded video and audio; `*_keep`
  [1, O, 1] weighs each point (0: a repeated point not to count)."""
  image_error = (outputs["image"] - image_true) * image_keep
  audio_error = (outputs["audio"] - audio_true) * audio_keep
  return {
    "image_abs": jnp.sum(jnp.abs(image_error), axis=(1, 2)),
    "image_sq": jnp.sum(jnp.square(image_error), axis=(1, 2)),
    "audio_abs": jnp.sum(jnp.abs(audio_error), axis=(1, 2)),
    "audio_sq": jnp.sum(jnp.square(audio_error), axis=(1, 2)),
  }


def samples_per_patch(apply_fn, inputs) -> int:
  """The samples of one decoded audio patch, from the output shapes of a one-point call
  (`jax.eval_shape`: nothing is computed)."""
  one = jnp.zeros((1,), jnp.int32)
  points = {"image": one, "audio": one}
  shapes = jax.eval_shape(lambda x: apply_fn(x, subsampled_points=points), inputs)
  return shapes["audio"].shape[-1]


def chunk_points(k: jax.Array, num_points: int, chunks: int) -> tuple[jax.Array, jax.Array]:
  """Chunk k of `chunks` consecutive chunks of `num_points` output points: (flat indices [c],
  keep [c]) with c = ceil(num_points / chunks). So that every chunk has one shape (one
  compiled call), the last chunk repeats the last point; `keep` is False on the repeats."""
  size = -(-num_points // chunks)
  index = k * size + jnp.arange(size)
  return jnp.minimum(index, num_points - 1), index < num_points


@dataclasses.dataclass(frozen=True)
class MultimodalAutoencoding(base.Task):
  """Reconstruction of video, audio and label (see the module docstring).

  Attributes:
    image_weight, audio_weight, label_weight: the loss weights (the paper's 0.03, 1, 0.0001).
    eval_chunks: decoder calls per clip at evaluation, each decoding 1 / eval_chunks of every
      modality's points (the encoder runs once per call).
  """

  NAME = "multimodal_autoencoding"
  image_weight: float = 0.03
  audio_weight: float = 1.0
  label_weight: float = 0.0001
  eval_chunks: int = 128

  def __post_init__(self):
    for field in ("image_weight", "audio_weight", "label_weight"):
      if getattr(self, field) < 0:
        base.fail(field, getattr(self, field), "must be >= 0")
    if self.eval_chunks < 1:
      base.fail("eval_chunks", self.eval_chunks, "must be at least 1")

  def model_kwargs(self, batch: base.Batch) -> dict:
    labels = batch["labels"]
    if "image_points" not in labels:
      return {}
    return {"subsampled_points": {"image": labels["image_points"], "audio": labels["audio_points"]}}

  def _terms(self, outputs, batch, image_points, audio_points):
    """Per-example error sums of the decoded points, and how many values they cover."""
    image_true, audio_true = _targets(batch, image_points, audio_points, outputs["audio"].shape[-1])
    return {
      **_error_sums(outputs, image_true, audio_true),
      "image_values": float(image_true.shape[1] * image_true.shape[2]),
      "audio_values": float(audio_true.shape[1] * audio_true.shape[2]),
    }

  def _label_terms(self, logits: jax.Array, classes: jax.Array) -> dict:
    logits = logits.astype(jnp.float32)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, classes)
    top5 = jax.lax.top_k(logits, min(5, logits.shape[-1]))[1]
    return {
      "ce": ce,
      "top1": (jnp.argmax(logits, axis=-1) == classes).astype(jnp.float32),
      "top5": jnp.any(top5 == classes[:, None], axis=-1).astype(jnp.float32),
    }

  def _loss(self, image_l1, audio_l1, ce):
    return self.image_weight * image_l1 + self.audio_weight * audio_l1 + self.label_weight * ce

  def loss(self, outputs, batch: base.Batch):
    labels = batch["labels"]
    terms = self._terms(outputs, batch, labels["image_points"], labels["audio_points"])
    label = self._label_terms(outputs["label"], labels["class"])
    image_l1 = jnp.mean(terms["image_abs"]) / terms["image_values"]
    audio_l1 = jnp.mean(terms["audio_abs"]) / terms["audio_values"]
    ce = jnp.mean(label["ce"])
    metrics = {
      "image_l1": image_l1,
      "audio_l1": audio_l1,
      "label_ce": ce,
      "top1": jnp.mean(label["top1"]),
      "image_psnr": jnp.mean(psnr(terms["image_sq"] / terms["image_values"])),
      "audio_psnr": jnp.mean(psnr(terms["audio_sq"] / terms["audio_values"])),
    }
    return self._loss(image_l1, audio_l1, ce), metrics

  def eval_step(self, apply_fn, batch: base.Batch, axis_name: str):
    inputs, classes = batch["inputs"], batch["labels"]["class"]
    video = inputs["image"]
    num_pixels = video.shape[1] * video.shape[2] * video.shape[3]
    patch = samples_per_patch(apply_fn, inputs)
    num_patches = inputs["audio"].shape[1] // patch

    def chunk(k):
      image_points, image_keep = chunk_points(k, num_pixels, self.eval_chunks)
      audio_points, audio_keep = chunk_points(k, num_patches, self.eval_chunks)
      outputs = apply_fn(inputs, subsampled_points={"image": image_points, "audio": audio_points})
      image_true, audio_true = _targets(batch, image_points, audio_points, patch)
      sums = _error_sums(
        outputs,
        image_true,
        audio_true,
        image_keep.astype(jnp.float32)[None, :, None],
        audio_keep.astype(jnp.float32)[None, :, None],
      )
      return sums, outputs["label"]

    sums, logits = jax.lax.map(chunk, jnp.arange(self.eval_chunks))  # [K, b], [K, b, C]
    sums = jax.tree.map(lambda x: jnp.sum(x, axis=0), sums)  # [b]
    image_values, audio_values = float(num_pixels * 3), float(num_patches * patch)
    label = self._label_terms(logits[0], classes)  # the label is the same in every chunk
    per_example = {
      "image_psnr": psnr(sums["image_sq"] / image_values),
      "audio_psnr": psnr(sums["audio_sq"] / audio_values),
      "top1": label["top1"],
      "top5": label["top5"],
      "loss": self._loss(
        sums["image_abs"] / image_values, sums["audio_abs"] / audio_values, label["ce"]
      ),
    }
    mask = batch["mask"]
    out = {f"{k}_sum": jnp.sum(v * mask) for k, v in per_example.items()}
    out["count"] = jnp.sum(mask)
    return jax.lax.psum(out, axis_name)

  def evaluator(self) -> base.SumsEvaluator:
    return base.SumsEvaluator(
      {f"{k}_sum": f"eval/{k}" for k in ("image_psnr", "audio_psnr", "top1", "top5", "loss")}
    )
