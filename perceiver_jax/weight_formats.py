"""Every weight format this package reads and writes, behind one `read` and one `write`.

  official       the release's pickle `{'params': ..., 'state': ...}` (`*.pystate`):
                 `official_format` (read without running code from the file).
  official_bare  the release's bare params pickle (language, flow and video models).
  safetensors    this package's safetensors file: flat `module/path/leaf` keys, float32 or
                 bfloat16, the model config in the metadata (`safetensors_io`).
  hf             a transformers Perceiver folder (`config.json` + `model.safetensors` or
                 `pytorch_model.bin`): read only (`hf_format`).
  orbax          a training run's checkpoints (a `Checkpointer` directory, one of its step
                 directories, or a workdir): read only (`pretrained`).

`read(path)` detects the format and returns `Weights(params, state, model_config)`:
`model_config` is the `config.model` stored with the weights (safetensors, hf), else None.
"""

from __future__ import annotations

import dataclasses
import json
import os

import ml_collections

from perceiver_jax import hf_format
from perceiver_jax import metrics
from perceiver_jax import official_format
from perceiver_jax import registry
from perceiver_jax import safetensors_io
from perceiver_jax.official_format import CheckpointFormatError

READ_FORMATS = ("official", "official_bare", "safetensors", "hf", "orbax")
WRITE_FORMATS = ("official", "official_bare", "safetensors")
CONFIG_KEY = "perceiver_jax.model_config"


@dataclasses.dataclass
class Weights:
  params: dict
  state: dict
  model_config: ml_collections.ConfigDict | None = None


def detect(path: str) -> str:
  """The format of `path` (one of `READ_FORMATS`); CheckpointFormatError if none fits."""
  if os.path.isdir(path):
    if hf_format.is_hf_folder(path):
      return "hf"
    return "orbax"
  if not os.path.exists(path):
    raise CheckpointFormatError(f"{path}: no such file or directory")
  if safetensors_io.is_safetensors(path):
    return "safetensors"
  return "official"


def model_config_to_json(cfg: ml_collections.ConfigDict) -> str:
  return cfg.to_json(sort_keys=True)


def model_config_from_json(text: str, where: str) -> ml_collections.ConfigDict:
  """A `config.model` from its JSON: the registry's base config of its modality with the
  stored values applied (lists back to tuples), so every field has its declared type."""
  try:
    values = json.loads(text)
    cfg = registry.base_config(values["modality"], values["num_classes"])
    metrics.apply_json(cfg, values, "", "config.model")
  except (ValueError, KeyError, TypeError) as e:
    raise CheckpointFormatError(f"{where}: unreadable model config in the metadata ({e})") from None
  return cfg


def read_model_config(path: str) -> ml_collections.ConfigDict | None:
  """The model config stored with the weights at `path` (hf: its config.json; safetensors:
  its metadata), reading no tensors; None for a format that stores none."""
  fmt = detect(path)
  if fmt == "hf":
    where = os.path.join(path, "config.json")
    return hf_format.model_config_from_hf(hf_format.read_hf_config(path), where)
  if fmt == "safetensors":
    text = safetensors_io.read_metadata(path).get(CONFIG_KEY)
    return model_config_from_json(text, path) if text else None
  return None


def read(path: str, fmt: str | None = None) -> Weights:
  """The weights at `path` in format `fmt` (None: `detect`)."""
  fmt = fmt or detect(path)
  if fmt not in READ_FORMATS:
    raise ValueError(f"format {fmt!r}: expected one of {READ_FORMATS}")
  if fmt == "hf":
    cfg, params, state = hf_format.read_hf_folder(path)
    return Weights(params, state, cfg)
  if fmt == "safetensors":
    params, state, metadata = safetensors_io.load(path)
    cfg = metadata.get(CONFIG_KEY)
    return Weights(params, state, model_config_from_json(cfg, path) if cfg else None)
  if fmt == "orbax":
    from perceiver_jax import pretrained  # noqa: PLC0415 (pretrained reads through here)

    params, state = pretrained.read_orbax(path)
    return Weights(dict(params), dict(state))
  params, state = official_format.load_official_pickle(path)
  return Weights(params, state)


def write(
  path: str,
  weights: Weights,
  fmt: str,
  *,
  dtype: str = "float32",
) -> None:
  """Writes `weights` in `fmt` (one of `WRITE_FORMATS`), atomically: a failure leaves no
  partial file. `dtype` ('float32' or 'bfloat16') applies to safetensors only."""
  if fmt not in WRITE_FORMATS:
    raise ValueError(
      f"cannot write format {fmt!r}: writable are {WRITE_FORMATS} (hf and orbax are read only)"
    )
  if fmt == "safetensors":
    metadata = {}
    if weights.model_config is not None:
      metadata[CONFIG_KEY] = model_config_to_json(weights.model_config)
    safetensors_io.save(path, weights.params, weights.state, dtype=dtype, metadata=metadata)
    return
  if dtype != "float32":
    raise ValueError(f"dtype={dtype!r}: the official pickles are written in float32")
  if fmt == "official_bare" and any(weights.state.values()):
    raise ValueError(
      f"{path}: the model has state ({sorted(weights.state)}): a bare params pickle cannot "
      "hold it; write --to=official"
    )
  official_format.save_official_pickle(
    path, weights.params, weights.state, bare=fmt == "official_bare"
  )
