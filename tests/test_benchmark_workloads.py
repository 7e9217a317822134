"""The benchmark workloads are the specified models (parameter counts from first principles)."""

import pytest

from perceiver_jax import model
from perceiver_jax.tools import benchmark_workloads as workloads
from perceiver_jax.tools import flops


def _linear(n_in, n_out):
  return n_in * n_out + n_out


def _block(q, kv, qk, v, widening):
  """Parameters of a cross- or self-attention block (LayerNorms, Q/K/V/O, MLP)."""
  norms = 2 * q + (2 * kv if kv is not None else 0) + 2 * q
  kv = q if kv is None else kv
  attention = _linear(q, qk) + _linear(kv, qk) + _linear(kv, v) + _linear(v, q)
  return norms + attention + _linear(q, widening * q) + _linear(widening * q, q)


def test_io_small_is_the_specified_model():
  cfg = workloads.io_small()
  assert model.input_channels(cfg) == 261  # 3 + 2 x (2 x 64) sines/cosines + 2 positions
  assert flops.num_inputs(cfg) == 4096
  expected = (
    256 * 512  # latents
    + _block(512, 261, 261, 261, 1)  # one cross-attend, qk = v = 261
    + 4 * _block(512, None, 512, 512, 1)  # 4 self-attends shared by the 2 blocks
    + 512  # the classification query
    + _block(512, 512, 512, 512, 1)
    + _linear(512, 10)
  )
  assert model.count_params(model.param_shapes(cfg)[0]) == expected


def test_perceiver_small_shares_cross_attends_as_the_paper():
  cfg = workloads.perceiver_small()
  params = model.param_shapes(cfg)[0]
  cross = {
    k.split("/~/")[1].split("/")[0] for k in params if k.startswith("perceiver_encoder/~/cross_att")
  }
  assert cross == {"cross_attention", "cross_attention_1"}  # 2 weight sets for 4 cross-attends
  expected = (
    128 * 256
    + 2 * _block(256, 261, 261, 261, 1)  # the first cross-attend, and the other 3
    + 2 * _block(256, None, 256, 256, 1)
    + _linear(256, 10)
  )
  assert model.count_params(params) == expected


def test_workload_cases():
  long = workloads.cases("imagenet-long", chunk_size=2048)
  assert [c.model.attention_chunk_size for c in long] == [0, 2048]
  assert flops.num_inputs(long[0].model) == 224 * 224
  scaling = workloads.cases("scaling")
  inputs = [flops.num_inputs(c.model) for c in scaling if "perceiver" in c.label]
  assert inputs == list(workloads.SCALING_INPUTS)
  for case in scaling:  # the same 261 input channels at every size
    assert model.input_channels(case.model) == 261
  with pytest.raises(ValueError, match="unknown workload 'huge'"):
    workloads.cases("huge")


def test_paper_models_and_memory_modes():
  assert [c.label for c in workloads.cases("paper-models")] == list(workloads.PAPER_MODELS)
  chunked = workloads.memory_case("testing", "chunked+remat", 2, 512).model
  assert chunked.attention_chunk_size == 512 and chunked.remat
  plain = workloads.memory_case("testing", "plain", 2, 512).model
  assert plain.attention_chunk_size == 0 and not plain.remat
  with pytest.raises(ValueError, match="unknown imagenet-memory mode 'fast'"):
    workloads.memory_case("testing", "fast", 2, 512)
