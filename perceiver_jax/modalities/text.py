"""The 'text' modality: UTF-8 byte ids [B, L] (`data.bytes_tokenizer`) embedded for the encoder.

Its fields of `config.model` (`default_config`): `input_shape` (L,) and the section `text`:
`vocab_size`, `embed_dim` and the init scales of the byte embedding and of the learned input
position encoding, which is added to the embeddings (the released language model's input).

Id PAD (0) marks padding: the preprocessor returns the input mask `ids != PAD` [B, L] with the
inputs, so padded bytes are never attended to, and it exposes the embedding matrix for
decoders that tie their output logits to it (`models.decoders.EmbeddingTiedDecoder`).
Module names are the release's, at the top level: `embed/embeddings`,
`trainable_position_encoding/pos_embs`.
"""

from __future__ import annotations

import haiku as hk
import jax
import jax.numpy as jnp
import ml_collections

from perceiver_jax.data import bytes_tokenizer
from perceiver_jax.models import position_encoding

SECTION = "text"


def default_config() -> ml_collections.ConfigDict:
  """The modality's fields of `config.model`: 2,048 bytes embedded in 768 channels."""
  return ml_collections.ConfigDict(
    dict(
      input_shape=(2048,),
      text=dict(
        vocab_size=bytes_tokenizer.VOCAB_SIZE,
        embed_dim=768,
        # Stddev of the truncated-normal byte embedding. The embedding is also the output
        # projection (logits = features @ embeddings.T), so a unit scale would start training
        # with logits of size sqrt(embed_dim) and a loss far above ln(262).
        embed_init_scale=0.02,
        position_init_scale=0.02,
      ),
    )
  )


def input_channels(cfg: ml_collections.ConfigDict) -> int:
  """Width C of the encoder's input array [B, L, C]: the embedding width."""
  return cfg.text.embed_dim


def validate(cfg: ml_collections.ConfigDict) -> None:
  """Raises ValueError, one line naming the field and its value, for impossible settings."""
  shape = tuple(cfg.input_shape)
  if len(shape) != 1 or shape[0] < 1:
    raise ValueError(f"config.model.input_shape={shape!r}: a text model needs (num_bytes,)")
  if cfg.text.vocab_size <= bytes_tokenizer.MASK:
    raise ValueError(
      f"config.model.text.vocab_size={cfg.text.vocab_size!r}: must hold the special ids "
      f"(at least {bytes_tokenizer.MASK + 1}); bytes need {bytes_tokenizer.VOCAB_SIZE}"
    )
  if cfg.text.embed_dim < 1:
    raise ValueError(f"config.model.text.embed_dim={cfg.text.embed_dim!r}: must be positive")


def dummy_inputs(cfg: ml_collections.ConfigDict, batch_size: int = 1) -> jax.Array:
  """All-PAD byte ids [batch_size, L], int32."""
  return jnp.full((batch_size, *cfg.input_shape), bytes_tokenizer.PAD, jnp.int32)


def modality_sizes(cfg: ml_collections.ConfigDict) -> None:
  """None: one input array, no per-modality sizes for the decoder's query."""
  del cfg
  return None


class TextPreprocessor:
  """Byte ids [B, L] -> (embeddings + positions [B, L, D], embeddings [B, L, D], mask [B, L]).

  A plain object rather than an `hk.Module`, so that its two modules sit at the top level of
  the parameter tree as in the release. Create and call it inside a Haiku transform.
  """

  def __init__(self, cfg: ml_collections.ConfigDict):
    text = cfg.text
    self._embed = hk.Embed(
      vocab_size=text.vocab_size,
      embed_dim=text.embed_dim,
      w_init=hk.initializers.TruncatedNormal(text.embed_init_scale),
      name="embed",
    )
    self._positions = position_encoding.TrainablePositionEncoding(
      index_dim=cfg.input_shape[0],
      num_channels=text.embed_dim,
      init_scale=text.position_init_scale,
      name="trainable_position_encoding",
    )

  @property
  def embedding_matrix(self) -> jax.Array:
    """The byte embedding [vocab_size, D] (for logits tied to it)."""
    return self._embed.embeddings

  def __call__(
    self, ids: jax.Array, *, is_training: bool
  ) -> tuple[jax.Array, jax.Array, jax.Array]:
    del is_training
    embedded = self._embed(ids)  # [B, L, D]
    inputs = embedded + self._positions(ids.shape[0])  # [B, L, D]
    return inputs, embedded, ids != bytes_tokenizer.PAD


def build_preprocessor(cfg: ml_collections.ConfigDict) -> TextPreprocessor:
  """The byte embedding and input positions; call inside a Haiku transform."""
  return TextPreprocessor(cfg)
