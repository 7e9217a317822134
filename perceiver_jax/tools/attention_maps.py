"""Cross-attention maps of a trained Perceiver, as in the Perceiver paper's Fig. 3.

`cross_attention_weights(cfg, params, state, images)` runs the model and returns, for each
cross-attend in call order, its attention weights [B, heads, latents, inputs]: the softmax
over the inputs of each latent's query. They are recorded by wrapping
`attention_kernels.attend_kv` while the model is traced, and recomputed from the same queries and
keys it receives, so the model code carries no hook. `plot_run` draws them for a few test
images next to the input and saves PNGs.
"""

from __future__ import annotations

import contextlib
import math
import os

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from perceiver_jax import model
from perceiver_jax.modalities import image
from perceiver_jax.models import attention_kernels


@contextlib.contextmanager
def _recording():
  """Yields a list that collects (module name, weights [B, H, N, M]) of every attention call."""
  records = []
  original = attention_kernels.attend_kv

  def recording_attend_kv(q, kv_inputs, kv_fn, mask=None, **kwargs):
    keys, _ = kv_fn(kv_inputs)  # [B, M, H, Dk]
    logits = jnp.einsum("bnhd,bmhd->bhnm", q, keys, preferred_element_type=jnp.float32)
    logits = logits / math.sqrt(q.shape[-1])
    if mask is not None:
      logits = jnp.where(mask[:, None].astype(bool), logits, -1e30)
    records.append((hk.experimental.current_name(), jax.nn.softmax(logits)))
    return original(q, kv_inputs, kv_fn, mask, **kwargs)

  attention_kernels.attend_kv = recording_attend_kv
  try:
    yield records
  finally:
    attention_kernels.attend_kv = original


def cross_attention_weights(cfg, params, state, images) -> list[np.ndarray]:
  """[B, heads, latents, inputs] float32 per cross-attend, in the order they run."""
  if cfg.architecture != "perceiver":
    raise ValueError(f"attention maps need a Perceiver, not {cfg.architecture!r}")
  forward = model.build_model(cfg)

  def run(params, state, images):
    with _recording() as records:
      forward.apply(params, state, None, images, is_training=False)
    return [w for name, w in records if "cross_attention" in name]

  return [np.asarray(w) for w in jax.jit(run)(params, state, images)]


def input_order(cfg) -> np.ndarray:
  """For each input element as the model sees it, its index in the unpermuted grid."""
  from perceiver_jax.models import preprocessors

  rows, cols = image.input_grid(cfg)
  if cfg.input.permute_pixels:
    return preprocessors.fixed_permutation(rows * cols, cfg.input.permutation_seed)
  return np.arange(rows * cols)


def to_grid_maps(weights: np.ndarray, cfg) -> np.ndarray:
  """[..., inputs] weights -> [..., rows, cols] on the image grid (un-permuted)."""
  rows, cols = image.input_grid(cfg)
  grid = np.zeros((*weights.shape[:-1], rows * cols), weights.dtype)
  grid[..., input_order(cfg)] = weights
  return grid.reshape(*weights.shape[:-1], rows, cols)


def plot_run(
  run_dir: str,
  cfg,
  out_dir: str,
  *,
  data_dir: str | None = None,
  num_images: int = 4,
  num_latents: int = 4,
) -> list[str]:
  """Saves, per test image, its cross-attention maps: the mean over latents of the first and
  the last cross-attend, and `num_latents` single latents of each. Returns the PNG paths."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  from perceiver_jax import pretrained
  from perceiver_jax.data import fashion_mnist

  _, params, state = pretrained.load_trained_model(run_dir, cfg)
  raw, labels = fashion_mnist.load_split("test", data_dir)
  raw, labels = raw[:num_images], labels[:num_images]
  images = fashion_mnist.normalize(raw)
  weights = cross_attention_weights(cfg, params, state, images)
  # Heads averaged; the first and the last cross-attend (the later one's weights are the ones
  # every cross-attend after the first would share).
  picks = {"cross-attend 1": weights[0].mean(axis=1)}
  if len(weights) > 1:
    picks[f"cross-attend {len(weights)}"] = weights[-1].mean(axis=1)
  # The latents whose first-cross-attend maps differ most from uniform, on the first image.
  spread = picks["cross-attend 1"][0].max(axis=-1)
  latents = np.argsort(-spread)[:num_latents]
  os.makedirs(out_dir, exist_ok=True)
  paths = []
  columns = 1 + len(picks) * (1 + num_latents)
  for i in range(len(raw)):
    fig, axes = plt.subplots(1, columns, figsize=(1.5 * columns, 1.9))
    axes[0].imshow(raw[i], cmap="gray")
    axes[0].set_title(fashion_mnist.CLASS_NAMES[labels[i]], fontsize=7)
    col = 1
    for title, w in picks.items():
      maps = to_grid_maps(w[i], cfg)  # [latents, rows, cols]
      axes[col].imshow(maps.mean(axis=0), cmap="viridis")
      axes[col].set_title(f"{title}\nmean of latents", fontsize=7)
      col += 1
      for latent in latents:
        axes[col].imshow(maps[latent], cmap="viridis")
        axes[col].set_title(f"{title}\nlatent {latent}", fontsize=7)
        col += 1
    for ax in axes:
      ax.set_xticks([])
      ax.set_yticks([])
    fig.tight_layout()
    path = os.path.join(out_dir, f"attention_{i}.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)
  return paths
