"""Tests for perceiver_jax/model.py: config validation and the assembled model."""

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import audioset
from perceiver_jax import model
from perceiver_jax import registry


@pytest.mark.parametrize("name", registry.names())
def test_input_channels_matches_the_built_model(name):
  cfg = registry.get_model_config(name)
  params, _ = model.param_shapes(cfg)
  channels = model.input_channels(cfg)
  if cfg.architecture == "convnet":
    assert params["convnet/stem_conv"]["w"].shape[2] == channels
  elif cfg.architecture == "vit":
    patch = cfg.baseline.patch_size
    assert params["vit/embed"]["w"].shape[0] == patch * patch * channels
  elif cfg.architecture == "transformer":
    assert params["transformer/embed"]["w"].shape[0] == channels
  else:
    kv_ln = params[f"{cfg.encoder_name}/~/cross_attention/layer_norm_1"]["scale"]
    assert kv_ln.shape == (channels,)


@pytest.mark.parametrize(
  "field, value, message",
  [
    ("num_self_attend_heads", 7, "config.model.num_latent_channels=32: not divisible by"),
    (
      "num_cross_attend_heads",
      2,
      "config.model.num_cross_attend_heads=2: cross-attend qk channels 37",
    ),
    ("num_cross_attends", 3, "config.model.num_cross_attends=3: more interleaved cross-attends"),
    ("cross_attend_placement", "middle", "config.model.cross_attend_placement='middle'"),
    ("attention_chunk_size", -1, "config.model.attention_chunk_size=-1"),
    ("dropout_prob", 1.5, "config.model.dropout_prob=1.5: must be in"),
    ("num_latents", 0, "config.model.num_latents=0: must be at least 1"),
  ],
)
def test_validate_names_field_and_value(field, value, message):
  cfg = registry.get_model_config("testing")
  cfg[field] = value
  with pytest.raises(ValueError, match=message.replace("(", r"\(")):
    model.validate_model_config(cfg)


def test_compute_dtype_is_validated():
  cfg = registry.get_model_config("testing")
  cfg.compute_dtype = "float16"
  with pytest.raises(ValueError) as error:
    model.validate_model_config(cfg)
  assert str(error.value) == (
    "config.model.compute_dtype='float16': expected one of ('float32', 'bfloat16')"
  )


def test_self_attend_channels_reach_every_self_attend():
  """qk 16 / v 8 instead of the latent width 32 (the MLM model sets qk 256 of 1,280)."""
  cfg = registry.get_model_config("testing")
  plain = model.count_params(model.param_shapes(cfg)[0])
  cfg.self_attend_qk_channels, cfg.self_attend_v_channels = 16, 8
  params, _ = model.param_shapes(cfg)
  attn = "perceiver_encoder/~/self_attention/attention"
  assert params[f"{attn}/linear"]["w"].shape == (32, 16)  # query
  assert params[f"{attn}/linear_1"]["w"].shape == (32, 16)  # key
  assert params[f"{attn}/linear_2"]["w"].shape == (32, 8)  # value
  assert params[f"{attn}/linear_3"]["w"].shape == (8, 32)  # output
  # Each of the 2 self-attends: q and k lose 2 x (32 x 16 + 16), v and out lose 32 x 24 + 24.
  assert plain - model.count_params(params) == 2 * (2 * (32 * 16 + 16) + 2 * 32 * 24 + 24)
  cfg.self_attend_qk_channels = 18
  with pytest.raises(ValueError, match=r"^config.model.self_attend_qk_channels=18: not divisible"):
    model.validate_model_config(cfg)


def test_validate_nested_fields():
  cfg = registry.get_model_config("testing")
  cfg.input.prep_type = "fft"
  with pytest.raises(ValueError, match="config.model.input.prep_type='fft'"):
    model.validate_model_config(cfg)
  cfg = registry.get_model_config("testing")
  cfg.decoder.type = "mlp"
  with pytest.raises(ValueError, match="config.model.decoder.type='mlp'"):
    model.validate_model_config(cfg)


def test_forward_shapes_and_training_changes_batchnorm_state():
  cfg = registry.get_model_config("testing")
  cfg.input.prep_type = "conv"
  cfg.input.spatial_downsample = 4
  cfg.input.num_channels = 8
  cfg.input.fourier.max_resolution = (8, 8)
  forward = model.build_model(cfg)
  images = jax.random.uniform(jax.random.PRNGKey(0), (3, 32, 32, 3))
  params, state = forward.init(jax.random.PRNGKey(1), images, is_training=True)
  logits, new_state = forward.apply(params, state, None, images, is_training=True)
  assert logits.shape == (3, 10)
  assert not all(
    np.allclose(a, b)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(new_state), strict=True)
  )
  eval_logits, eval_state = forward.apply(params, new_state, None, images, is_training=False)
  assert eval_logits.shape == (3, 10)
  assert all(
    np.array_equal(a, b)
    for a, b in zip(jax.tree.leaves(eval_state), jax.tree.leaves(new_state), strict=True)
  )


def test_dropout_model_needs_rng_only_in_training():
  cfg = registry.get_model_config("testing")
  cfg.dropout_prob = 0.2
  forward = model.build_model(cfg)
  images = jax.random.uniform(jax.random.PRNGKey(0), (2, 32, 32, 3))
  params, state = forward.init(jax.random.PRNGKey(1), images, is_training=True)
  a, _ = forward.apply(params, state, jax.random.PRNGKey(2), images, is_training=True)
  b, _ = forward.apply(params, state, jax.random.PRNGKey(3), images, is_training=True)
  assert not np.allclose(a, b)
  c, _ = forward.apply(params, state, None, images, is_training=False)
  d, _ = forward.apply(params, state, None, images, is_training=False)
  np.testing.assert_array_equal(c, d)


def _train_step_temp_bytes(cfg, batch_size=2):
  """XLA's temporary buffer size for forward + backward, from compilation alone."""
  forward = model.build_model(cfg)
  images = jax.ShapeDtypeStruct((batch_size, *cfg.input_shape), jax.numpy.float32)
  params, state = model.param_shapes(cfg)

  def loss(params, state, images):
    return forward.apply(params, state, None, images, is_training=True)[0].sum()

  compiled = jax.jit(jax.grad(loss)).lower(params, state, images).compile()
  return compiled.memory_analysis().temp_size_in_bytes


def test_chunked_remat_path_needs_a_fraction_of_the_memory():
  """The paper's layout (8 interleaved cross-attends, shared weights) on long inputs."""
  cfg = registry.get_model_config("perceiver_ff")
  cfg.input_shape = (112, 112, 3)  # 12,544 inputs of 261 channels
  cfg.num_latents, cfg.num_latent_channels = 128, 256
  cfg.num_self_attends_per_block = 2
  plain = _train_step_temp_bytes(cfg)
  cfg.attention_chunk_size = 1024
  cfg.remat = True
  lean = _train_step_temp_bytes(cfg)
  assert lean < plain / 4, (lean, plain)


def test_remat_keeps_the_parameter_tree():
  cfg = registry.get_model_config("perceiver_ff")
  plain, _ = model.param_shapes(cfg)
  cfg.remat = True
  cfg.attention_chunk_size = 4096
  lean, _ = model.param_shapes(cfg)
  assert jax.tree.map(lambda x: x.shape, plain) == jax.tree.map(lambda x: x.shape, lean)


def test_a_new_decoder_plugs_in_and_gets_what_its_query_needs(monkeypatch):
  """A decoder registered in model.DECODERS is built and called the one way every decoder is:
  its query from the inputs, the modality sizes of fused inputs and the subsampled points."""
  seen = {}

  class MeanQueryDecoder(hk.Module):
    def decoder_query(self, inputs, modality_sizes=None, inputs_without_pos=None, **kw):
      seen.update(modality_sizes=modality_sizes, num_inputs=inputs.shape[1], **kw)
      return jnp.mean(inputs, axis=1, keepdims=True)  # [B, 1, C]

    def __call__(self, query, z, *, is_training, query_mask=None):
      return hk.Linear(3)(query[:, 0] + jnp.mean(z, axis=(1, 2))[:, None])

  monkeypatch.setitem(model.DECODERS, "mean_query", lambda cfg, preprocessor: MeanQueryDecoder())
  cfg = audioset.model_config("audio_video")
  cfg.audio_video.audio.num_samples = 1280  # 10 patches
  cfg.audio_video.video.update(num_frames=2, image_size=16)  # 1 x 2 x 2 patches
  cfg.update(num_latents=4, num_latent_channels=8, num_blocks=1, num_self_attends_per_block=1)
  cfg.num_cross_attends, cfg.num_self_attend_heads = 1, 2
  cfg.decoder.type = "mean_query"
  forward = model.build_model(cfg)
  inputs = model.dummy_inputs(cfg, 2)
  params, state = forward.init(jax.random.PRNGKey(0), inputs, is_training=True)
  points = jnp.arange(3)
  out, _ = forward.apply(params, state, None, inputs, is_training=False, subsampled_points=points)
  assert out.shape == (2, 3) and out.dtype == jnp.float32
  assert seen["modality_sizes"] == {"audio": 10, "video": 4} and seen["num_inputs"] == 14
  np.testing.assert_array_equal(seen["subsampled_points"], [0, 1, 2])
