"""Reads transformers' Perceiver checkpoints: a folder of `config.json` + `model.safetensors`
(or `pytorch_model.bin`), as on the HuggingFace hub (`deepmind/vision-perceiver-learned`,
`-fourier`, `-conv`, `deepmind/language-perceiver`, `deepmind/optical-flow-perceiver`,
`deepmind/multimodal-perceiver`) and their fine-tuned descendants.

`read_hf_folder(path)` returns `(model_config, params, state)`: the `config.model` section
built from `config.json` and the weights under this package's (the official release's)
module paths, ready for `model.build_model(model_config)`. transformers is not needed: the
tensors are read with `safetensors` (`safetensors_io.read_tensors`) or, for a
`pytorch_model.bin`, by `torch_archive` (no code from the file runs).

transformers' port computes differently from the release in places; the model config that
`model_config_from_hf` builds selects this package's option for each, so an imported model
gives transformers' outputs:
  * the MLPs' GELU is exact (erf), not the tanh approximation (`activation='gelu_exact'`,
    from `hidden_act`);
  * the Fourier image classifier takes its features' maximum resolution as (224, 224)
    whatever the image size, and the conv classifier (56, 56);
  * the conv classifier pads its 7x7 convolution by 3 on every side and its max pool not at
    all (`input.conv_padding='transformers'`: a 224 image gives a 55 x 55 grid, not 56 x 56);
  * the learned-position classifier's decoder has a query residual (the release's has not);
  * channel counts fixed in its code, not read from the config: the learned classifier's
    256-channel 1x1 conv, position encoding and projection; the conv stem's 64 channels;
    the language model decoder's 8 heads and 256 qk channels; the flow model's 64-channel
    patch projection and 64 Fourier bands; the video autoencoder's 192 audio and 32 image
    bands, its paddings of 4 (inputs) and 2 (queries), and its label masked always;
  * the language model decodes padded positions like the others
    (`decoder.mask_padded_queries=False`);
  * the flow model returns flow / 100 where this package returns pixels (x 20,
    `flow.output_scale`): multiply transformers' `logits` by 20 to compare.
"""

from __future__ import annotations

import json
import os

import ml_collections
import numpy as np

from perceiver_jax import registry
from perceiver_jax import safetensors_io
from perceiver_jax.official_format import CheckpointFormatError

# transformers' model class -> the registry variant whose layout it has.
CLASSES = {
  "PerceiverForImageClassificationLearned": "io_learned",
  "PerceiverForImageClassificationFourier": "io_fourier",
  "PerceiverForImageClassificationConvProcessing": "io_conv",
  "PerceiverForMaskedLM": "language_perceiver_io",
  "PerceiverForOpticalFlow": "optical_flow",
  "PerceiverForMultimodalAutoencoding": "multimodal_autoencoding",
}
# `hidden_act` -> `config.model.activation`.
ACTIVATIONS = {
  "gelu": "gelu_exact",
  "gelu_pytorch_tanh": "gelu_tanh",
  "gelu_new": "gelu_tanh",
}
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def is_hf_folder(path: str) -> bool:
  """A directory holding `config.json` and one of `WEIGHT_FILES`."""
  return os.path.isfile(os.path.join(path, "config.json")) and any(
    os.path.isfile(os.path.join(path, name)) for name in WEIGHT_FILES
  )


def read_hf_config(path: str) -> dict:
  """The parsed `config.json` of an HF Perceiver folder; CheckpointFormatError if it is not
  one (no file, not JSON, `model_type` not 'perceiver', no known architecture)."""
  file = os.path.join(path, "config.json")
  try:
    with open(file, encoding="utf-8") as f:
      hf = json.load(f)
  except FileNotFoundError:
    raise CheckpointFormatError(f"{file}: no such file (an HF folder needs config.json)") from None
  except (OSError, ValueError) as e:
    raise CheckpointFormatError(f"{file}: not a readable JSON config ({e})") from None
  if not isinstance(hf, dict):
    raise CheckpointFormatError(f"{file}: holds a {type(hf).__name__}, not a JSON object")
  if hf.get("model_type") != "perceiver":
    raise CheckpointFormatError(
      f"{file}: model_type={hf.get('model_type')!r}, not 'perceiver': not a Perceiver model"
    )
  return hf


def hf_class(hf: dict, where: str = "config.json") -> str:
  """The one transformers class of `CLASSES` named in `architectures`."""
  names = [a for a in hf.get("architectures") or () if a in CLASSES]
  if len(names) != 1:
    raise CheckpointFormatError(
      f"{where}: architectures={hf.get('architectures')!r}: expected one of {sorted(CLASSES)}"
    )
  return names[0]


def _num_labels(hf: dict) -> int:
  return len(hf.get("id2label") or {}) or int(hf.get("num_labels", 2))


def model_config_from_hf(hf: dict, where: str = "config.json") -> ml_collections.ConfigDict:
  """`config.model` of transformers' model described by `hf` (a parsed config.json)."""
  cls = hf_class(hf, where)
  cfg = registry.get_model_config(CLASSES[cls])

  def get(key):
    if key not in hf:
      raise CheckpointFormatError(f"{where}: no {key!r}, which a {cls} config needs")
    return hf[key]

  act = get("hidden_act")
  if act not in ACTIVATIONS:
    raise CheckpointFormatError(f"{where}: hidden_act={act!r}: supported are {sorted(ACTIVATIONS)}")
  if not get("use_query_residual"):
    raise CheckpointFormatError(
      f"{where}: use_query_residual=false: the encoder's cross-attend always has its residual"
    )
  shape_for_attention = get("cross_attention_shape_for_attention")
  if shape_for_attention not in ("kv", "q"):
    raise CheckpointFormatError(
      f"{where}: cross_attention_shape_for_attention={shape_for_attention!r}: expected kv or q"
    )
  latents = get("d_latents")
  qk, v = hf.get("qk_channels") or 0, hf.get("v_channels") or 0
  cfg.update(
    num_latents=get("num_latents"),
    num_latent_channels=latents,
    num_blocks=get("num_blocks"),
    num_self_attends_per_block=get("num_self_attends_per_block"),
    num_cross_attends=1,
    num_cross_attend_heads=get("num_cross_attention_heads"),
    num_self_attend_heads=get("num_self_attention_heads"),
    # 'q' sizes a cross-attend's qk channels by its query: the latents in the encoder.
    cross_attend_qk_channels=qk or (latents if shape_for_attention == "q" else 0),
    cross_attend_v_channels=v,
    self_attend_qk_channels=qk,
    self_attend_v_channels=v,
    cross_attend_widening_factor=get("cross_attention_widening_factor"),
    self_attend_widening_factor=get("self_attention_widening_factor"),
    dropout_prob=0.0,
    dropout_attn_prob=float(hf.get("attention_probs_dropout_prob", 0.0)),
    activation=ACTIVATIONS[act],
  )
  if shape_for_attention == "q" and cls != "PerceiverForMaskedLM":
    raise CheckpointFormatError(
      f"{where}: cross_attention_shape_for_attention='q' is imported for the language model only"
    )
  if cls.startswith("PerceiverForImageClassification"):
    size = get("image_size")
    cfg.num_classes = _num_labels(hf)
    cfg.input_shape = (size, size, 3)
    cfg.decoder.use_query_residual = True
    if cls.endswith("Fourier"):
      cfg.input.fourier.max_resolution = (224, 224)
    elif cls.endswith("ConvProcessing"):
      cfg.input.fourier.max_resolution = (56, 56)
      cfg.input.conv_padding = "transformers"
  elif cls == "PerceiverForMaskedLM":
    cfg.num_classes = cfg.text.vocab_size = get("vocab_size")
    cfg.input_shape = (get("max_position_embeddings"),)
    cfg.text.embed_dim = get("d_model")
    cfg.decoder.update(num_heads=8, qk_channels=256, mask_padded_queries=False)
  elif cls == "PerceiverForOpticalFlow":
    height, width = get("train_size")
    cfg.input_shape = (2, height, width, 3)
    cfg.flow.fourier.max_resolution = (height, width)
  else:
    _multimodal(cfg, get)
  return cfg


def _multimodal(cfg: ml_collections.ConfigDict, get) -> None:
  frames, size = get("num_frames"), get("image_size")
  samples = frames * get("audio_samples_per_frame")
  cfg.num_classes = _num_labels({"id2label": get("id2label")})
  section = cfg.audio_video_label
  section.audio.update(
    num_samples=samples,
    samples_per_patch=get("samples_per_patch"),
    num_bands=192,
    max_resolution=(samples,),
  )
  section.image.update(
    num_frames=frames, image_size=size, num_bands=32, max_resolution=(frames, size, size)
  )
  section.min_padding_size = 4
  section.mask_probs.update(audio=0.0, image=0.0, label=1.0)
  section.eval_mask_probs.update(audio=0.0, image=0.0, label=1.0)
  section.queries.update(
    audio_num_bands=192,
    audio_max_resolution=(samples,),
    image_num_bands=32,
    image_max_resolution=(frames, size, size),
    label_channels=get("_label_trainable_num_channels"),
    min_padding_size=2,
    output_channels=get("output_num_channels"),
  )


# --- Weights: transformers' state dict -> two-level {module: {leaf: array}} mappings.


def _linear(sd, hf: str) -> dict:
  return {"w": sd.pop(f"{hf}.weight").T, "b": sd.pop(f"{hf}.bias")}


def _layer_norm(sd, hf: str) -> dict:
  return {"scale": sd.pop(f"{hf}.weight"), "offset": sd.pop(f"{hf}.bias")}


def _pos(array) -> dict:
  return {"pos_embs": array}


def _block(sd, hf: str, ours: str, *, cross: bool) -> dict:
  """A `PerceiverLayer` -> this package's CrossAttention / SelfAttention modules."""
  att = f"{hf}.attention"
  out = {
    f"{ours}/layer_norm": _layer_norm(sd, f"{att}.self.layernorm1"),
    f"{ours}/attention/linear": _linear(sd, f"{att}.self.query"),
    f"{ours}/attention/linear_1": _linear(sd, f"{att}.self.key"),
    f"{ours}/attention/linear_2": _linear(sd, f"{att}.self.value"),
    f"{ours}/attention/linear_3": _linear(sd, f"{att}.output.dense"),
    f"{ours}/mlp/linear": _linear(sd, f"{hf}.mlp.dense1"),
    f"{ours}/mlp/linear_1": _linear(sd, f"{hf}.mlp.dense2"),
  }
  if cross:
    out[f"{ours}/layer_norm_1"] = _layer_norm(sd, f"{att}.self.layernorm2")
    out[f"{ours}/layer_norm_2"] = _layer_norm(sd, f"{hf}.layernorm")
  else:
    out[f"{ours}/layer_norm_1"] = _layer_norm(sd, f"{hf}.layernorm")
  return out


def _encoder(sd, cfg) -> dict:
  enc = cfg.encoder_name
  params = {
    f"{enc}/~/trainable_position_encoding": _pos(sd.pop("perceiver.embeddings.latents")),
    **_block(sd, "perceiver.encoder.cross_attention", f"{enc}/~/cross_attention", cross=True),
  }
  for i in range(cfg.num_self_attends_per_block):
    name = "self_attention" + (f"_{i}" if i else "")
    params.update(_block(sd, f"perceiver.encoder.self_attends.{i}", f"{enc}/~/{name}", cross=False))
  return params


def _basic_decoder(sd, hf: str, ours: str, *, query: bool = True, output: bool = True) -> dict:
  params = _block(sd, f"{hf}.decoding_cross_attention", f"{ours}/cross_attention", cross=True)
  if query:
    key = f"{hf}.output_position_encodings.position_embeddings"
    params[f"{ours}/~/trainable_position_encoding"] = _pos(sd.pop(key))
  if output:
    params[f"{ours}/output"] = _linear(sd, f"{hf}.final_layer")
  return params


def _conv_kernel(weight: np.ndarray) -> np.ndarray:
  """[O, I, H, W] (PyTorch) -> [H, W, I, O] (Haiku)."""
  return np.ascontiguousarray(weight.transpose(2, 3, 1, 0))


def _image(sd, cfg, cls: str) -> tuple[dict, dict]:
  pre, params, state = "perceiver.input_preprocessor", {}, {}
  if cls.endswith("Learned"):
    built = "image_preprocessor/~_build_network_inputs"
    params["image_preprocessor/~/conv2_d"] = {
      "w": _conv_kernel(sd.pop(f"{pre}.convnet_1x1.weight")),
      "b": sd.pop(f"{pre}.convnet_1x1.bias"),
    }
    params[f"{built}/trainable_position_encoding"] = _pos(
      sd.pop(f"{pre}.position_embeddings.position_embeddings")
    )
    params[f"{built}/position_encoding_projector/linear"] = _linear(
      sd, f"{pre}.positions_projection"
    )
  elif cls.endswith("ConvProcessing"):
    stem, bn = "image_preprocessor/~/conv2_d_downsample/~", f"{pre}.convnet.batchnorm"
    params[f"{stem}/conv"] = {"w": _conv_kernel(sd.pop(f"{pre}.convnet.conv.weight"))}
    params[f"{stem}/batchnorm"] = {
      "scale": sd.pop(f"{bn}.weight").reshape(1, 1, 1, -1),
      "offset": sd.pop(f"{bn}.bias").reshape(1, 1, 1, -1),
    }
    # transformers keeps plain running statistics; Haiku a zero-debiased EMA whose
    # `average` is what evaluation reads (`hidden` = average * (1 - decay ** counter)).
    tracked = np.asarray(sd.pop(f"{bn}.num_batches_tracked", 1)).reshape(-1)
    counter = np.asarray(max(int(tracked[0]) if tracked.size else 1, 1), np.int32)
    decay = 0.9
    for name, key in (("mean_ema", "running_mean"), ("var_ema", "running_var")):
      average = sd.pop(f"{bn}.{key}").reshape(1, 1, 1, -1)
      hidden = (average * (1.0 - decay ** float(counter))).astype(average.dtype)
      state[f"{stem}/batchnorm/~/{name}"] = {
        "average": average,
        "hidden": hidden,
        "counter": counter,
      }
  params.update(
    _basic_decoder(sd, "perceiver.decoder.decoder", "classification_decoder/~/basic_decoder")
  )
  return params, state


def _masked_lm(sd) -> dict:
  pre = "perceiver.input_preprocessor"
  return {
    "embed": {"embeddings": sd.pop(f"{pre}.embeddings.weight")},
    "trainable_position_encoding": _pos(sd.pop(f"{pre}.position_embeddings.weight")),
    **_basic_decoder(sd, "perceiver.decoder", "basic_decoder", output=False),
    "embedding_decoder": {"bias": sd.pop("embedding_decoder.bias")},
  }


def _flow(sd) -> dict:
  return {
    "image_preprocessor/patches_linear": _linear(
      sd, "perceiver.input_preprocessor.conv_after_patches"
    ),
    **_basic_decoder(sd, "perceiver.decoder.decoder", "flow_decoder/~/basic_decoder", query=False),
  }


def _multimodal_weights(sd) -> dict:
  pre, dec, post = (
    "perceiver.input_preprocessor",
    "perceiver.decoder",
    "perceiver.output_postprocessor",
  )
  params = {}
  for m in ("audio", "image", "label"):
    params[f"multimodal_preprocessor/{m}_padding"] = _pos(sd.pop(f"{pre}.padding.{m}"))
    params[f"multimodal_preprocessor/{m}_mask_token"] = _pos(sd.pop(f"{pre}.mask.{m}"))
    params[f"multimodal_decoder/~decoder_query/{m}_padding"] = _pos(sd.pop(f"{dec}.padding.{m}"))
  label_query = f"{dec}.modalities.label.decoder.output_position_encodings.position_embeddings"
  params["classification_decoder/~/basic_decoder/~/trainable_position_encoding"] = _pos(
    sd.pop(label_query)
  )
  params.update(
    _basic_decoder(sd, f"{dec}.decoder", "multimodal_decoder/~/basic_decoder", query=False)
  )
  for m, ours in (
    ("audio", "audio_postprocessor"),
    ("image", "projection_postprocessor"),
    ("label", "classification_postprocessor"),
  ):
    params[f"{ours}/linear"] = _linear(sd, f"{post}.modalities.{m}.classifier")
  return params


def convert_state_dict(
  tensors: dict[str, np.ndarray], cfg: ml_collections.ConfigDict, cls: str, where: str
) -> tuple[dict, dict]:
  """transformers' state dict -> `(params, state)` under this package's module paths.

  Raises:
    CheckpointFormatError: a tensor the class needs is missing, or tensors are left over
      (listed), e.g. the weights of another class or of a changed layout.
  """
  sd = {k: np.asarray(v) for k, v in tensors.items()}
  try:
    params, state = _encoder(sd, cfg), {}
    if cls.startswith("PerceiverForImageClassification"):
      more, state = _image(sd, cfg, cls)
    elif cls == "PerceiverForMaskedLM":
      more = _masked_lm(sd)
    elif cls == "PerceiverForOpticalFlow":
      more = _flow(sd)
    else:
      more = _multimodal_weights(sd)
  except KeyError as e:
    raise CheckpointFormatError(
      f"{where}: missing tensor {e.args[0]!r}, which a {cls} has"
    ) from None
  params.update(more)
  if sd:
    raise CheckpointFormatError(
      f"{where}: {len(sd)} tensors that a {cls} does not have: {sorted(sd)}"
    )
  return params, state


def read_hf_tensors(path: str) -> tuple[dict[str, np.ndarray], str]:
  """The state dict of an HF folder's weight file (safetensors preferred) and its path."""
  safetensors_file = os.path.join(path, "model.safetensors")
  if os.path.isfile(safetensors_file):
    tensors, _ = safetensors_io.read_tensors(safetensors_file)
    return tensors, safetensors_file
  bin_file = os.path.join(path, "pytorch_model.bin")
  if os.path.isfile(bin_file):
    from perceiver_jax import torch_archive  # noqa: PLC0415 (only for .bin folders)

    return torch_archive.read_state_dict(bin_file), bin_file
  raise CheckpointFormatError(f"{path}: no model.safetensors or pytorch_model.bin")


def read_hf_folder(path: str) -> tuple[ml_collections.ConfigDict, dict, dict]:
  """`(model_config, params, state)` of an HF Perceiver folder; see the module docstring.

  Raises:
    CheckpointFormatError: one line naming the file and the problem: not a Perceiver config,
      an unknown class, unreadable or malformed weights, missing or unexpected tensors.
  """
  hf = read_hf_config(path)
  where = os.path.join(path, "config.json")
  cfg = model_config_from_hf(hf, where)
  tensors, weights_file = read_hf_tensors(path)
  tensors = {k: _float32(v) for k, v in tensors.items()}
  params, state = convert_state_dict(tensors, cfg, hf_class(hf, where), weights_file)
  return cfg, params, state


def _float32(array: np.ndarray) -> np.ndarray:
  """Floating tensors (float16, bfloat16, float64 as saved) as float32; the rest unchanged."""
  if array.dtype.kind == "f" or array.dtype.name == "bfloat16":
    return array.astype(np.float32)
  return array
