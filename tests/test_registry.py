"""Golden parameter counts and official parameter trees for every registry variant."""

import pytest

from perceiver_jax import model
from perceiver_jax import registry

# Totals of the released Perceiver IO checkpoints, and the Perceiver paper's model
# (44.9M in the paper; the exact count of our build of it is pinned too).
GOLDEN_PARAM_COUNTS = {
  "io_fourier": 48_440_627,
  "io_conv": 48_646_522,
  "io_learned": 62_255_848,
  "perceiver_ff": 44_912_254,
  "perceiver_ff_permuted": 44_912_254,
  "perceiver_learned": 48_189_577,
  "fashion_mnist": 307_982,  # 4x4 patches: 50 input channels, 32 x 128 latents
  "testing": 27_893,
  "modelnet40": 44_793_844,  # derived in test_modelnet40_training.py
  # Table 2 in miniature: 784 pixels + 8-band Fourier features (35 channels).
  "fmnist_perceiver_ff": 295_052,
  "fmnist_perceiver_learned": 276_459,
  "fmnist_convnet_ff": 317_866,
  "fmnist_vit_ff": 866_442,
  "fmnist_transformer_ff": 103_050,
  "language_perceiver_io": 201_108_230,  # the released byte model (test_text_model.py)
  "mlm_testing": 51_942,
  "mlm_mini": 606_470,
  "optical_flow": 41_057_134,  # the released flow model (test_flow_model.py)
  "flow_testing": 35_902,
  "flow_mini": 573_518,
  "multimodal_autoencoding": 19_858_855,  # the released video autoencoder (test_multimodal.py)
  "multimodal_testing": 43_070,
}


def _shapes(tree):
  return {f"{m}/{leaf}": tuple(v.shape) for m, leaves in tree.items() for leaf, v in leaves.items()}


def _layer_norms(prefix, widths):
  """Expected leaves of LayerNorms named `layer_norm`, `layer_norm_1`, ... of these widths."""
  shapes = {}
  for i, width in enumerate(widths):
    name = "layer_norm" + (f"_{i}" if i else "")
    shapes[f"{prefix}/{name}/scale"] = (width,)
    shapes[f"{prefix}/{name}/offset"] = (width,)
  return shapes


def _attention_and_mlp(prefix, q, kv, out):
  """Expected leaves of `attention` (Q, K, V, output Linears in that order) and `mlp`."""
  shapes = {}
  for name, (fan_in, fan_out) in {
    "linear": (q, out),
    "linear_1": (kv, out),
    "linear_2": (kv, out),
    "linear_3": (out, q),
  }.items():
    shapes[f"{prefix}/attention/{name}/w"] = (fan_in, fan_out)
    shapes[f"{prefix}/attention/{name}/b"] = (fan_out,)
  for name in ("linear", "linear_1"):
    shapes[f"{prefix}/mlp/{name}/w"] = (q, q)
    shapes[f"{prefix}/mlp/{name}/b"] = (q,)
  return shapes


def _block(prefix, q, kv, out):
  """Expected leaves of one official CrossAttention module (LNs on query, kv, pre-MLP)."""
  return {**_layer_norms(prefix, (q, kv, q)), **_attention_and_mlp(prefix, q, kv, out)}


def _self_attention(prefix, width):
  """Expected leaves of one official SelfAttention module (LNs pre-attention, pre-MLP)."""
  return {
    **_layer_norms(prefix, (width, width)),
    **_attention_and_mlp(prefix, width, width, width),
  }


def official_imagenet_tree(kv_width):
  """The released ImageNet Perceiver IO tree (official_param_tree.md, section 3.2)."""
  enc = "perceiver_encoder/~"
  dec = "classification_decoder/~/basic_decoder"
  shapes = {f"{enc}/trainable_position_encoding/pos_embs": (512, 1024)}
  shapes.update(_block(f"{enc}/cross_attention", 1024, kv_width, kv_width))
  for i in range(6):
    shapes.update(_self_attention(f"{enc}/self_attention" + (f"_{i}" if i else ""), 1024))
  shapes[f"{dec}/~/trainable_position_encoding/pos_embs"] = (1, 1024)
  shapes.update(_block(f"{dec}/cross_attention", 1024, 1024, 1024))
  shapes[f"{dec}/output/w"] = (1024, 1000)
  shapes[f"{dec}/output/b"] = (1000,)
  return shapes


def test_official_trees_are_transcribed_consistently():
  assert len(official_imagenet_tree(261)) == 136  # the count the reference states


def test_io_fourier_matches_official_tree():
  params, state = model.param_shapes(registry.get_model_config("io_fourier"))
  assert _shapes(params) == official_imagenet_tree(261)
  assert state == {}


def test_io_conv_matches_official_tree():
  params, state = model.param_shapes(registry.get_model_config("io_conv"))
  expected = official_imagenet_tree(322)
  stem = "image_preprocessor/~/conv2_d_downsample/~"
  expected[f"{stem}/conv/w"] = (7, 7, 3, 64)
  expected[f"{stem}/batchnorm/scale"] = (1, 1, 1, 64)
  expected[f"{stem}/batchnorm/offset"] = (1, 1, 1, 64)
  assert _shapes(params) == expected
  expected_state = {}
  for ema in ("mean_ema", "var_ema"):
    expected_state[f"{stem}/batchnorm/~/{ema}/average"] = (1, 1, 1, 64)
    expected_state[f"{stem}/batchnorm/~/{ema}/hidden"] = (1, 1, 1, 64)
    expected_state[f"{stem}/batchnorm/~/{ema}/counter"] = ()
  assert _shapes(state) == expected_state


def test_io_learned_matches_official_tree():
  params, _ = model.param_shapes(registry.get_model_config("io_learned"))
  expected = official_imagenet_tree(512)
  pre = "image_preprocessor"
  expected[f"{pre}/~/conv2_d/w"] = (1, 1, 3, 256)
  expected[f"{pre}/~/conv2_d/b"] = (256,)
  expected[f"{pre}/~_build_network_inputs/trainable_position_encoding/pos_embs"] = (50176, 256)
  expected[f"{pre}/~_build_network_inputs/position_encoding_projector/linear/w"] = (256, 256)
  expected[f"{pre}/~_build_network_inputs/position_encoding_projector/linear/b"] = (256,)
  assert _shapes(params) == expected


@pytest.mark.parametrize("name", registry.names())
def test_golden_parameter_count(name):
  params, _ = model.param_shapes(registry.get_model_config(name))
  assert model.count_params(params) == GOLDEN_PARAM_COUNTS[name]


def test_every_variant_has_a_golden_count():
  assert sorted(GOLDEN_PARAM_COUNTS) == registry.names()


def test_paper_imagenet_perceiver_counts():
  """44.9M with the paper's sharing, 326.2M without (paper Table 7), from first principles."""
  d, c, classes = 1024, 261, 1000
  linear = lambda i, o: i * o + o  # noqa: E731
  cross = 2 * d + 2 * c + linear(d, c) + 2 * linear(c, c) + linear(c, d) + 2 * d + 2 * linear(d, d)
  self_attend = 4 * d + 4 * linear(d, d) + 2 * linear(d, d)
  head = linear(d, classes)
  latents = 512 * d
  shared = latents + 2 * cross + 6 * self_attend + head
  unshared = latents + 8 * cross + 48 * self_attend + head
  assert GOLDEN_PARAM_COUNTS["perceiver_ff"] == shared
  assert round(shared / 1e6, 1) == 44.9
  cfg = registry.get_model_config("perceiver_ff")
  cfg.share_cross_attend_weights = False
  cfg.share_latent_block_weights = False
  params, _ = model.param_shapes(cfg)
  assert model.count_params(params) == unshared
  assert round(unshared / 1e6, 1) == 326.2


def test_unknown_variant_names_the_choices():
  with pytest.raises(
    ValueError,
    match=(
      "unknown model variant 'nope'; known variants: fashion_mnist, flow_mini, flow_testing, "
      "fmnist_"
    ),
  ):
    registry.get_model_config("nope")
