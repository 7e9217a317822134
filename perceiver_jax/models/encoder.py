"""The Perceiver encoder: cross-attends from a latent array into the inputs, then a
latent Transformer, repeated in blocks.

One module covers both papers:
  * Perceiver (ImageNet): 8 blocks of 6 self-attends, a cross-attend before each
    block (`num_cross_attends=8`, interleaved); the first cross-attend has its own
    weights, the other 7 share one set, and the latent blocks share one set.
  * Perceiver IO: one cross-attend, then `num_blocks` repeats of one shared latent block.
  * No sharing at all (AudioSet, paper Table 7): every cross-attend and every
    self-attend has its own weights.

Shapes: inputs [B, M, C_in]; latents z [B, N, D] with N = `num_latents` and
D = `num_latent_channels`.

Module names match the official release: `perceiver_encoder/~/trainable_position_encoding`
(the latent array), `~/cross_attention[_i]`, `~/self_attention[_i]`, numbered in
creation order.
"""

from __future__ import annotations

import haiku as hk
import jax
import jax.numpy as jnp

from perceiver_jax.models import attention
from perceiver_jax.models import input_array
from perceiver_jax.models import position_encoding

CROSS_ATTEND_PLACEMENTS = ("interleaved", "start")


def cross_attend_schedule(num_cross_attends: int, num_blocks: int, placement: str) -> list[int]:
  """Index of the latent block that each cross-attend precedes.

  'interleaved' spreads the cross-attends evenly over the blocks (8 of 8: one before
  each block); 'start' puts them all before the first block (paper Table 6).
  """
  if placement not in CROSS_ATTEND_PLACEMENTS:
    raise ValueError(
      f"cross_attend_placement must be one of {CROSS_ATTEND_PLACEMENTS}, got {placement!r}"
    )
  if num_cross_attends < 1:
    raise ValueError(f"num_cross_attends must be at least 1, got {num_cross_attends}")
  if placement == "start":
    return [0] * num_cross_attends
  if num_cross_attends > num_blocks:
    raise ValueError(
      f"num_cross_attends={num_cross_attends} cannot be interleaved with num_blocks={num_blocks}"
    )
  return [i * num_blocks // num_cross_attends for i in range(num_cross_attends)]


def cross_attend_weight_index(i: int, share: bool) -> int:
  """Which weight set cross-attend `i` uses: with sharing, the first is its own and
  all later ones share a second set."""
  return min(i, 1) if share else i


class PerceiverEncoder(hk.Module):
  """Latents cross-attend to the inputs and are processed by latent Transformers."""

  def __init__(
    self,
    num_latents: int = 512,
    num_latent_channels: int = 1024,
    num_blocks: int = 8,
    num_self_attends_per_block: int = 6,
    num_cross_attends: int = 1,
    cross_attend_placement: str = "interleaved",
    share_cross_attend_weights: bool = True,
    share_latent_block_weights: bool = True,
    num_cross_attend_heads: int = 1,
    num_self_attend_heads: int = 8,
    cross_attend_qk_channels: int | None = None,
    cross_attend_v_channels: int | None = None,
    self_attend_qk_channels: int | None = None,
    self_attend_v_channels: int | None = None,
    cross_attend_widening_factor: int = 1,
    self_attend_widening_factor: int = 1,
    dropout_prob: float = 0.0,
    dropout_attn_prob: float = 0.0,
    latent_init_scale: float = 0.02,
    use_query_residual: bool = True,
    attention_chunk_size: int | None = None,
    remat: bool = False,
    name: str = "perceiver_encoder",
  ):
    super().__init__(name=name)
    if num_latent_channels % num_self_attend_heads:
      raise ValueError(
        f"num_latent_channels={num_latent_channels} is not divisible by "
        f"num_self_attend_heads={num_self_attend_heads}"
      )
    self._schedule = cross_attend_schedule(num_cross_attends, num_blocks, cross_attend_placement)
    self._remat = remat
    # Consecutive blocks that use the same weights: [cross-attend sets, latent set, count].
    self._segments = []
    for block in range(num_blocks):
      cross_ids = tuple(
        cross_attend_weight_index(i, share_cross_attend_weights)
        for i, target in enumerate(self._schedule)
        if target == block
      )
      latent_set = 0 if share_latent_block_weights else block
      if self._segments and self._segments[-1][:2] == [cross_ids, latent_set]:
        self._segments[-1][2] += 1
      else:
        self._segments.append([cross_ids, latent_set, 1])

    self.latent_array = position_encoding.TrainablePositionEncoding(
      index_dim=num_latents, num_channels=num_latent_channels, init_scale=latent_init_scale
    )
    num_cross_sets = (
      cross_attend_weight_index(num_cross_attends - 1, share_cross_attend_weights) + 1
    )
    self.cross_attends = [
      attention.CrossAttention(
        num_heads=num_cross_attend_heads,
        dropout_prob=dropout_prob,
        dropout_attn_prob=dropout_attn_prob,
        widening_factor=cross_attend_widening_factor,
        use_query_residual=use_query_residual,
        qk_channels=cross_attend_qk_channels,
        v_channels=cross_attend_v_channels,
        chunk_size=attention_chunk_size,
      )
      for _ in range(num_cross_sets)
    ]
    num_latent_sets = 1 if share_latent_block_weights else num_blocks
    self.latent_blocks = [
      [
        attention.SelfAttention(
          num_heads=num_self_attend_heads,
          dropout_prob=dropout_prob,
          dropout_attn_prob=dropout_attn_prob,
          widening_factor=self_attend_widening_factor,
          qk_channels=self_attend_qk_channels,
          v_channels=self_attend_v_channels,
        )
        for _ in range(num_self_attends_per_block)
      ]
      for _ in range(num_latent_sets)
    ]

  def latents(self, batch_size: int) -> jax.Array:
    """The learned initial latent array, [B, N, D]."""
    return self.latent_array(batch_size)

  def __call__(
    self,
    inputs: jax.Array | input_array.InputArray,
    z: jax.Array,
    *,
    is_training: bool,
    input_mask: jax.Array | None = None,
  ) -> jax.Array:
    """inputs [B, M, C_in], z [B, N, D], input_mask [B, M] -> z [B, N, D].

    `inputs` may be an `input_array.InputArray`: the cross-attends build their keys and
    values from its parts.

    With `remat`, each block (its cross-attends and latent Transformer) is
    rematerialised, and runs of identical blocks (shared weights) go through one
    `hk.scan`: the backward pass then stores only the latents between blocks and
    recomputes one block at a time, whatever order the compiler would choose.
    """
    attention_mask = None
    if input_mask is not None:
      attention_mask = jnp.broadcast_to(
        input_mask[:, None, :].astype(bool), (z.shape[0], z.shape[1], inputs.shape[1])
      )  # [B, N, M]
    # The cross-attends that share weights see the same inputs, so they share keys and
    # values: one cache per weight set. Rematerialised blocks recompute their own, as
    # values computed inside one block's trace cannot be used in another's.
    kv_caches = None if self._remat else [{} for _ in self.cross_attends]
    for cross_ids, latent_set, count in self._segments:

      def block(z, cross_ids=cross_ids, latent_set=latent_set):
        for i in cross_ids:
          z = self.cross_attends[i](
            z,
            inputs,
            attention_mask,
            is_training=is_training,
            kv_cache=None if kv_caches is None else kv_caches[i],
          )
        for layer in self.latent_blocks[latent_set]:
          z = layer(z, is_training=is_training)
        return z

      if self._remat:
        block = hk.remat(block)
        if count > 1:
          z, _ = hk.scan(lambda z, _, block=block: (block(z), None), z, None, length=count)
          continue
      for _ in range(count):
        z = block(z)
    return z
