"""The benchmark workloads are the specified models (parameter counts from first principles)."""

import numpy as np
import pytest

from perceiver_jax import model
from perceiver_jax.data import bytes_tokenizer
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


def test_mlm_small_is_the_released_layout_at_small_widths():
  cfg = workloads.mlm_small()
  assert model.input_channels(cfg) == 128 and flops.num_inputs(cfg) == 256
  expected = (
    262 * 128  # byte embedding, also the output projection (tied)
    + 256 * 128  # learned input positions
    + 64 * 128  # latents
    + _block(128, 128, 64, 128, 1)  # cross-attend: qk 64, v 128
    + 4 * _block(128, None, 64, 128, 1)  # 4 self-attends: qk 64, v 128
    + 256 * 128  # one decoder query per byte
    + _block(128, 128, 64, 128, 1)  # the queries' cross-attend to the latents
    + 262  # the logits' bias
  )
  assert model.count_params(model.param_shapes(cfg)[0]) == expected
  (case,) = workloads.cases("mlm-small")
  assert (case.batch_size, case.task) == (8, "masked_lm")


def test_masked_lm_batch_masks_words_of_full_sequences():
  inputs, labels = workloads.masked_lm_batch(workloads.mlm_small(), 8)
  ids, weights = np.asarray(labels["ids"]), np.asarray(labels["weights"])
  inputs = np.asarray(inputs)
  assert inputs.shape == ids.shape == weights.shape == (8, 256)
  assert ids.min() >= bytes_tokenizer.OFFSET  # full sequences: no padding, no special ids
  assert np.array_equal(inputs[weights == 0], ids[weights == 0])  # only predicted bytes change
  # About 15% of the words (of 6.5 bytes with their space on average) are predicted.
  assert 0.08 < weights.mean() < 0.2
  assert 0.6 < np.mean(inputs[weights == 1] == bytes_tokenizer.MASK) < 0.95
  again = workloads.masked_lm_batch(workloads.mlm_small(), 8)[0]
  assert np.array_equal(np.asarray(again), inputs)  # the same batch in every run
