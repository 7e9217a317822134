"""Classifies one image with a checkpoint in the official Perceiver IO pickle format.

  python -m perceiver_jax.predict --config=configs/imagenet.py:variant=io_fourier \
      --checkpoint=imagenet_fourier_position_encoding.pystate --input=cat.jpg \
      [--output=logits.npy]

`--input` is an image file for an RGB image model, preprocessed as the official evaluation
does (centre crop of 224/256 of the short side, bicubic resize, ImageNet mean/std), or a
`.npy` array already preprocessed in the model's input shape (float or int). Prints the top-k
classes as JSON. A bad input, config or checkpoint ends with one `error:` line.
"""

from __future__ import annotations

import jax
import numpy as np
from absl import logging

from perceiver_jax import model
from perceiver_jax import official_format
from perceiver_jax import pretrained
from perceiver_jax import weight_formats
from perceiver_jax.data import image_ops
from perceiver_jax.data import imagenet_classes


def load_input(path: str, model_config) -> np.ndarray:
  """One model input, float32, from a preprocessed `.npy` or an image file.

  A `.npy` must hold finite real numbers (float, int or uint: no bool, complex, datetime,
  string or object array) in the model's input shape. An image file needs an RGB image model
  with a square input [H, H, 3]; it is decoded at its bit depth (16-bit grey scaled to 0..255,
  not clipped) and preprocessed as the official evaluation does.

  Raises:
    ValueError: one line naming the file and the problem.
  """
  input_shape = model.input_shapes(model_config)
  if path.endswith(".npy"):
    try:
      array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
      raise ValueError(f"cannot read array {path!r}: {e}") from None
    if array.dtype.kind not in "iuf":
      raise ValueError(
        f"array {path!r} has dtype {array.dtype}; the model takes real numbers (float or int)"
      )
    if array.shape != input_shape:
      raise ValueError(f"array {path!r} has shape {array.shape}, the model expects {input_shape}")
    if not np.all(np.isfinite(array)):
      raise ValueError(f"array {path!r} has non-finite values")
    return array.astype(np.float32)
  if model_config.modality != "image" or input_shape[1:] != (input_shape[0], 3):
    raise ValueError(
      f"{path!r} is an image file, but the model takes {model_config.modality} input of shape "
      f"{input_shape}, not an RGB image [H, H, 3]: give a preprocessed .npy of that shape"
    )
  return image_ops.load_image_for_eval(path, size=input_shape[0])


def use_stored_model_config(config, path: str) -> None:
  """Sets `config.model` to the model config stored with the weights at `path` (a
  transformers folder's config.json, this package's safetensors metadata), if they store one:
  those weights are that model's. Reads no tensors."""
  stored = weight_formats.read_model_config(path)
  if stored is not None:
    logging.info("%s: using the model config stored with the weights", path)
    config.model = stored


def load_checkpoint(model_config, path: str):
  """Loads weights in any format (`pretrained.read_weights`: an official-format pickle, this
  package's safetensors, a transformers folder, a checkpoint directory or a training workdir)
  and checks them against the model's parameter tree."""
  params, state = pretrained.read_weights(path)
  expected_params, expected_state = model.param_shapes(model_config)
  params = official_format.match_to_template(expected_params, params, what="params")
  state = official_format.match_to_template(expected_state, state, what="state")
  return params, state


def class_names(num_classes: int) -> list[str]:
  if num_classes == 1000:
    return imagenet_classes.imagenet_class_names()
  return [f"class_{i}" for i in range(num_classes)]


def predict(model_config, params, state, image: np.ndarray) -> np.ndarray:
  """Logits [num_classes] for one preprocessed image [H, W, C]."""
  forward = model.build_model(model_config)
  apply = jax.jit(lambda p, s, x: forward.apply(p, s, None, x, is_training=False)[0])
  return np.asarray(apply(params, state, image[None]))[0]


def top_k(logits: np.ndarray, names: list[str], k: int) -> list[dict]:
  probs = np.asarray(jax.nn.softmax(logits))
  order = np.argsort(-logits, kind="stable")[:k]
  return [
    {
      "class_id": int(i),
      "label": names[i],
      "probability": float(probs[i]),
      "logit": float(logits[i]),
    }
    for i in order
  ]
