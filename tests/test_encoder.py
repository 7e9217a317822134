"""Tests for perceiver_jax/models/encoder.py: cross-attend placement and weight sharing."""

import haiku as hk
import jax
import jax.numpy as jnp
import numerics
import numpy as np
import pytest

from perceiver_jax.models import encoder


@pytest.mark.parametrize(
  "num_cross, num_blocks, placement, expected",
  [
    (1, 8, "interleaved", [0]),
    (8, 8, "interleaved", list(range(8))),
    (2, 8, "interleaved", [0, 4]),
    (4, 8, "interleaved", [0, 2, 4, 6]),
    (4, 8, "start", [0, 0, 0, 0]),
    (3, 4, "interleaved", [0, 1, 2]),
  ],
)
def test_cross_attend_schedule(num_cross, num_blocks, placement, expected):
  assert encoder.cross_attend_schedule(num_cross, num_blocks, placement) == expected


def test_cross_attend_schedule_rejects_impossible_settings():
  with pytest.raises(
    ValueError, match="num_cross_attends=9 cannot be interleaved with num_blocks=8"
  ):
    encoder.cross_attend_schedule(9, 8, "interleaved")
  with pytest.raises(ValueError, match="cross_attend_placement"):
    encoder.cross_attend_schedule(1, 8, "middle")
  with pytest.raises(ValueError, match="at least 1"):
    encoder.cross_attend_schedule(0, 8, "start")


def _encoder_fn(**kwargs):
  def fn(inputs, mask=None):
    enc = encoder.PerceiverEncoder(
      num_latents=4, num_latent_channels=8, num_self_attend_heads=2, **kwargs
    )
    return enc(inputs, enc.latents(inputs.shape[0]), is_training=False, input_mask=mask)

  return hk.transform(fn)


def _modules(params):
  return sorted({m.split("/")[2] for m in params if m.startswith("perceiver_encoder/~/")})


@pytest.mark.parametrize(
  "share_cross, share_latent, cross_modules, num_self",
  [
    (True, True, ["cross_attention", "cross_attention_1"], 2),
    (False, True, [f"cross_attention{s}" for s in ("", "_1", "_2", "_3")], 2),
    (True, False, ["cross_attention", "cross_attention_1"], 8),
    (False, False, [f"cross_attention{s}" for s in ("", "_1", "_2", "_3")], 8),
  ],
)
def test_weight_sharing_creates_the_papers_modules(
  share_cross, share_latent, cross_modules, num_self
):
  fn = _encoder_fn(
    num_blocks=4,
    num_self_attends_per_block=2,
    num_cross_attends=4,
    share_cross_attend_weights=share_cross,
    share_latent_block_weights=share_latent,
  )
  params = fn.init(jax.random.PRNGKey(0), jnp.ones((1, 10, 6)))
  modules = _modules(params)
  assert [m for m in modules if m.startswith("cross")] == cross_modules
  self_modules = [m for m in modules if m.startswith("self_attention")]
  assert len(self_modules) == num_self
  assert "trainable_position_encoding" in modules


def test_single_cross_attend_is_perceiver_io():
  fn = _encoder_fn(num_blocks=8, num_self_attends_per_block=6, num_cross_attends=1)
  params = fn.init(jax.random.PRNGKey(0), jnp.ones((1, 10, 6)))
  modules = _modules(params)
  assert modules.count("cross_attention") == 1 and "cross_attention_1" not in modules
  assert len([m for m in modules if m.startswith("self_attention")]) == 6


def test_placement_changes_the_function_but_not_the_parameters():
  inputs = jax.random.normal(jax.random.PRNGKey(1), (2, 10, 6))
  kwargs = dict(num_blocks=4, num_self_attends_per_block=1, num_cross_attends=2)
  interleaved = _encoder_fn(cross_attend_placement="interleaved", **kwargs)
  start = _encoder_fn(cross_attend_placement="start", **kwargs)
  params = interleaved.init(jax.random.PRNGKey(0), inputs)
  assert jax.tree.map(jnp.shape, params) == jax.tree.map(
    jnp.shape, start.init(jax.random.PRNGKey(0), inputs)
  )
  assert not np.allclose(
    interleaved.apply(params, None, inputs), start.apply(params, None, inputs), atol=1e-3
  )


def test_input_mask_hides_masked_inputs():
  """Changing masked-out inputs does not change the latents; changing visible ones does."""
  fn = _encoder_fn(num_blocks=2, num_self_attends_per_block=1, num_cross_attends=2)
  inputs = jax.random.normal(jax.random.PRNGKey(1), (2, 10, 6))
  mask = jnp.arange(10)[None, :].repeat(2, 0) < jnp.array([[7], [4]])
  params = fn.init(jax.random.PRNGKey(0), inputs, mask)
  base = fn.apply(params, None, inputs, mask)
  hidden_changed = inputs.at[:, 8:].set(100.0)
  numerics.assert_close_to_scale(fn.apply(params, None, hidden_changed, mask), base, rtol=1e-6)
  visible_changed = inputs.at[:, 0].set(100.0)
  assert not np.allclose(fn.apply(params, None, visible_changed, mask), base, atol=1e-3)


def test_remat_and_chunking_do_not_change_values_or_gradients():
  inputs = jax.random.normal(jax.random.PRNGKey(1), (2, 50, 6))
  # Blocks 2 and 3 share every weight, so remat runs them through one scan.
  kwargs = dict(num_blocks=4, num_self_attends_per_block=2, num_cross_attends=3)
  plain = _encoder_fn(**kwargs)
  lean = _encoder_fn(attention_chunk_size=16, remat=True, **kwargs)
  params = plain.init(jax.random.PRNGKey(0), inputs)

  def loss(fn, params):
    return jnp.sum(jnp.sin(fn.apply(params, None, inputs)))

  np.testing.assert_allclose(loss(plain, params), loss(lean, params), rtol=1e-5)
  g_plain, key_biases_plain = numerics.split_key_biases(jax.grad(lambda p: loss(plain, p))(params))
  g_lean, key_biases_lean = numerics.split_key_biases(jax.grad(lambda p: loss(lean, p))(params))
  # Chunked sums run in another order: each gradient differs by rounding, 5e-6 of its largest
  # element at most on the machine this was written on; a chunk left out changes it by 10x.
  numerics.assert_trees_close_to_scale(g_lean, g_plain, rtol=1e-4)
  # The key biases' gradient is zero in exact arithmetic, so both hold only rounding noise
  # (3e-9 of the largest gradient measured).
  gradient_scale = numerics.scale(g_plain)
  assert len(jax.tree.leaves(key_biases_plain)) == 4  # two cross- and two self-attends
  assert numerics.scale((key_biases_plain, key_biases_lean)) < 1e-6 * gradient_scale


def test_shared_cross_attends_project_the_inputs_once():
  """Cross-attends with one weight set see the same inputs: their keys and values, and the
  gradients of those projections, are computed once. Two more such cross-attends then add
  only their latent-side work, far less than one K/V projection of the inputs."""
  inputs = jnp.ones((1, 1024, 64))
  kv_projection_flops = 2 * 2 * 1024 * 64 * 64  # K and V, multiplies and adds

  def grad_flops(num_cross_attends):
    fn = _encoder_fn(
      num_blocks=4, num_self_attends_per_block=1, num_cross_attends=num_cross_attends
    )
    params = fn.init(jax.random.PRNGKey(0), inputs)
    grad = jax.jit(jax.grad(lambda p: jnp.sum(fn.apply(p, None, inputs))))
    return grad.lower(params).compile().cost_analysis()["flops"]

  # Measured: 7.2 MFLOP more for 4 cross-attends than for 2 (74 MFLOP when every
  # cross-attend projected the inputs itself).
  assert grad_flops(4) - grad_flops(2) < kv_projection_flops


def test_heads_must_divide_latent_channels():
  with pytest.raises(
    ValueError, match="num_latent_channels=8 is not divisible by num_self_attend_heads=3"
  ):
    hk.transform(
      lambda x: encoder.PerceiverEncoder(num_latent_channels=8, num_self_attend_heads=3)(
        x, x, is_training=False
      )
    ).init(jax.random.PRNGKey(0), jnp.ones((1, 4, 8)))
