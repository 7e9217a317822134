"""Input modalities: one adapter module per kind of input, all with the same interface.

Each adapter (`image`, `points`, `audio_video`, `audio_video_label`, `text`, `flow`) turns its
part of `config.model` into plain arguments for the Haiku modules of `perceiver_jax.models`:
  SECTION                   the name of its config section in `config.model`.
  default_config()          its fields of `config.model` (its section, and `input_shape`
                            where the inputs are one array).
  validate(cfg)             ValueError naming `config.model.<field>=<value>` in one line.
  input_channels(cfg)       the width C of the encoder's input array [B, M, C].
  modality_sizes(cfg)       {modality: M} of fused inputs, in their order along M, for the
                            decoder's query; None for one input array.
  build_preprocessor(cfg)   inside a Haiku transform: `(inputs, *, is_training) ->
                            (inputs [B, M, C], inputs_without_pos [B, M, C'])`, plus an
                            input mask [B, M] (True: attend) where inputs can be padding.
  dummy_inputs(cfg, batch_size)  zeros shaped like a batch of its inputs.
`cfg` is `config.model`; `config.model.modality` names the adapter. A new modality is a new
module here plus its entry in MODALITIES.
"""

from __future__ import annotations

import types

from perceiver_jax.modalities import audio_video
from perceiver_jax.modalities import audio_video_label
from perceiver_jax.modalities import flow
from perceiver_jax.modalities import image
from perceiver_jax.modalities import points
from perceiver_jax.modalities import text

MODALITIES: dict[str, types.ModuleType] = {
  "image": image,
  "points": points,
  "audio_video": audio_video,
  "audio_video_label": audio_video_label,
  "text": text,
  "flow": flow,
}


def get(name: str) -> types.ModuleType:
  """The adapter of modality `name`."""
  if name not in MODALITIES:
    raise ValueError(f"config.model.modality={name!r}: expected one of {tuple(MODALITIES)}")
  return MODALITIES[name]
