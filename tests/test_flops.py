"""Analytic FLOP counts against XLA's cost analysis."""

import pytest

from perceiver_jax import registry
from perceiver_jax.tools import benchmark_workloads as workloads
from perceiver_jax.tools import flops


@pytest.mark.parametrize(
  "name", ["io-small", "perceiver-small", "transformer", "io_conv", "modelnet40"]
)
def test_analytic_flops_agree_with_xla(name):
  """Matrix multiplies are almost all of a Perceiver's work: XLA's count (which adds the
  elementwise operations) is at most a few percent above the analytic one."""
  cfg = {
    "io-small": workloads.io_small,
    "perceiver-small": workloads.perceiver_small,
    "transformer": lambda: workloads.scaling_transformer(32),
    "io_conv": lambda: registry.get_model_config("io_conv"),
    "modelnet40": lambda: registry.get_model_config("modelnet40"),
  }[name]()
  analytic, xla = flops.forward_flops(cfg), flops.xla_forward_flops(cfg)
  assert 0.97 * xla <= analytic <= xla
  assert flops.train_flops(cfg) == 3 * analytic


@pytest.mark.parametrize(
  ("embed_dim", "decoder"),
  # 192: bytes embedded wider than the latents, so that each decoder term needs the right width.
  [(128, "embedding"), (192, "embedding"), (128, "sentence")],
)
def test_analytic_flops_of_text_models_agree_with_xla(embed_dim, decoder):
  """At mlm-small's widths XLA's elementwise work (softmax, LayerNorm, GELU, the position
  add) is 3-4% of its count. The lower bound 0.95 breaks when any term of 2% or more is
  missing (mlm-small: the logits through the embedding 13%, the byte queries' cross-attend
  30%, its QK^T and AV 4.8%, its key/value projections 2.4%); counting the embedding lookup
  as a one-hot matmul or the self-attends' qk as the latent width breaks the upper bound."""
  cfg = workloads.mlm_small()
  cfg.text.embed_dim = embed_dim
  cfg.decoder.type = decoder
  if decoder == "sentence":
    cfg.num_classes = 3
  analytic, xla = flops.forward_flops(cfg), flops.xla_forward_flops(cfg)
  assert 0.95 * xla <= analytic <= xla
  assert flops.num_inputs(cfg) == 256


def test_no_analytic_flops_for_convnets():
  assert flops.forward_flops(registry.get_model_config("fmnist_convnet_ff")) is None
