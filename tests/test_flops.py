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


def test_no_analytic_flops_for_convnets():
  assert flops.forward_flops(registry.get_model_config("fmnist_convnet_ff")) is None
