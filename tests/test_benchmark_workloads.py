"""The benchmark workloads are the specified models (parameter counts from first principles),
and the flow workloads' batches and tiled measurement."""

import numpy as np
import pytest

from perceiver_jax import model
from perceiver_jax import registry
from perceiver_jax.data import bytes_tokenizer
from perceiver_jax.data import flow_procedural
from perceiver_jax.tools import benchmark_suite
from perceiver_jax.tools import benchmark_workloads as workloads
from perceiver_jax.tools import benchmarking
from perceiver_jax.tools import flops
from perceiver_jax.tools import flow_tiles


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


def test_flow_train_is_the_flow_mini_training_step():
  (case,) = workloads.cases("flow-train")
  assert (case.batch_size, case.task) == (16, "flow")
  assert case.model.to_dict() == registry.get_model_config("flow_mini").to_dict()
  assert flops.num_inputs(case.model) == 32 * 48
  assert model.input_channels(case.model) == 32 + 2 * 2 * 16 + 2  # patches + Fourier features


def test_flow_batch_is_generated_pairs_with_their_flow():
  cfg = workloads.flow_mini()
  inputs, labels = workloads.flow_batch(cfg, 3, seed=5)
  inputs, flow, valid = (np.asarray(x) for x in (inputs, labels["flow"], labels["valid"]))
  assert inputs.shape == (3, 2, 32, 48, 3) and inputs.dtype == np.float32
  assert flow.shape == (3, 32, 48, 2) and valid.shape == (3, 32, 48)
  assert flow.dtype == valid.dtype == np.float32 and np.all(valid == 1)
  # The pairs of make_pair from a generator of the seed, in order, frames as x / 127.5 - 1.
  rng = np.random.default_rng(5)
  scene = flow_procedural.scene_config(flow_procedural.default_config())
  first, second = (flow_procedural.make_pair(rng, (32, 48), scene) for _ in range(2))
  np.testing.assert_array_equal(inputs[1, 1], second["frame2"] / np.float32(127.5) - 1)
  np.testing.assert_array_equal(inputs[0, 0], first["frame1"] / np.float32(127.5) - 1)
  np.testing.assert_array_equal(flow[1], second["flow"])
  assert inputs.min() >= -1 and inputs.max() <= 1 and np.abs(flow).max() > 0.5
  again = np.asarray(workloads.flow_batch(cfg, 3, seed=5)[0])
  assert np.array_equal(again, inputs)


def test_flow_flops_agree_with_xla():
  """flow_mini: the decoder's per-pixel cross-attend is half the count; XLA adds 2%."""
  cfg = workloads.flow_mini()
  analytic, xla = flops.forward_flops(cfg), flops.xla_forward_flops(cfg)
  assert 0.96 * xla <= analytic <= xla


def test_released_flow_flops_from_first_principles():
  """M = 182,528 pixels of C = 64 + 258 channels, N = 2,048 latents of D = 512: multiply-adds
  of the preprocessor's Linear, the encoder's cross-attend (qk = v = C), 24 self-attends
  (qk = v = D, widening 1), and the decoder's cross-attend (M queries of width C, qk = v = D)
  with its output Linear C -> 2."""
  m, c, n, d = 368 * 496, 322, 2048, 512
  preprocess = m * 54 * 64
  cross = n * d * c + m * c * 2 * c + n * c * d + n * m * 2 * c + 2 * n * d * d
  latent = n * d * 3 * d + n * n * 2 * d + n * d * d + 2 * n * d * d
  decoder = m * c * d + n * d * 2 * d + m * d * c + m * n * 2 * d + 2 * m * c * c + m * c * 2
  expected = 2 * (preprocess + cross + 24 * latent + decoder)
  assert flops.forward_flops(registry.get_model_config("optical_flow")) == expected
  assert expected == pytest.approx(1.887e12, rel=1e-3)


def test_flow_tiled_cases():
  small = workloads.tiled_case("small", 6)
  assert small.label == "small batch 6" and small.batch_size == 6
  assert tuple(small.model.input_shape) == (2, 368, 496, 3)
  assert tuple(small.model.flow.fourier.max_resolution) == (368, 496)
  mini = workloads.flow_mini()
  for field in ("num_latents", "num_latent_channels", "num_self_attends_per_block"):
    assert small.model[field] == mini[field]
  assert model.input_channels(small.model) == model.input_channels(mini) == 98
  released = workloads.tiled_case("released", 1).model
  assert released.to_dict() == registry.get_model_config("optical_flow").to_dict()
  assert model.count_params(model.param_shapes(released)[0]) > 41e6
  # Sintel's frames: 2 x 3 tiles of the release's size.
  assert len(flow_tiles.tile_origins(small.frame_size, workloads.FLOW_TILE, small.overlap)) == 6
  with pytest.raises(ValueError, match="flow-tiled model 'huge'"):
    workloads.tiled_case("huge", 1)
  with pytest.raises(ValueError, match="batch_size=0"):
    workloads.tiled_case("small", 0)


@pytest.fixture(scope="module")
def tiny_tiled_result():
  """The small model at a 16 x 24 tile on 28 x 60 frames: 2 x 3 tiles, 4 per call."""
  case = workloads.tiled_case("small", 4, tile=(16, 24), frame_size=(28, 60), overlap=4)
  return benchmark_suite.measure_tiled(case, dtype="float32", pairs=2, warmup=1)


def test_measure_tiled_times_whole_pairs(tiny_tiled_result):
  r = tiny_tiled_result
  assert r["num_tiles"] == 6 and r["flow_shape"] == [28, 60, 2] and r["finite"]
  assert r["tile"] == [16, 24] and r["frame_size"] == [28, 60] and r["batch_size"] == 4
  assert len(r["pair_s_runs"]) == 2 and r["pair_s"] == pytest.approx(np.median(r["pair_s_runs"]))
  assert r["pairs_per_s"] == pytest.approx(1 / r["pair_s"])
  assert r["tiles_per_s"] == pytest.approx(6 / r["pair_s"])
  cfg = workloads.flow_small_tiled((16, 24))
  assert r["flops_per_pair"] == 6 * flops.forward_flops(cfg)  # the 2 padding tiles not counted
  assert r["num_params"] == model.count_params(model.param_shapes(cfg)[0])
  assert r["first_pair_s"] > 0 and r["compile_s"] > 0 and r["xla_call_bytes"] > 0
  lines = benchmark_suite.tiled_table([{**r, "mfu": 0.125}])
  assert len(lines) == 3 and lines[2].startswith("| small batch 4 | float32 |")
  assert "| 6 of 16 x 24 |" in lines[2] and "| 12.5% |" in lines[2]


def test_measure_tiled_runs_the_released_model():
  """The released model's case at a tiny tile, with 2 of its 24 self-attends (each is 15
  GFLOP a tile, whatever the tile: 2,048 latents of 512 channels)."""
  case = workloads.tiled_case("released", 2, tile=(8, 8), frame_size=(8, 12), overlap=2)
  case.model.num_self_attends_per_block = 2
  r = benchmark_suite.measure_tiled(case, dtype="float32", pairs=1, warmup=0)
  assert r["num_tiles"] == 2 and r["flow_shape"] == [8, 12, 2] and r["finite"]
  assert r["num_params"] == model.count_params(model.param_shapes(case.model)[0])
  assert r["first_pair_s"] is None


def test_suite_options_check_flow_tiled_flags():
  assert "flow-tiled" in benchmark_suite.WORKLOADS
  assert "flow-train" in workloads.MODEL_WORKLOADS
  with pytest.raises(ValueError, match="--tiled_models has 'huge'"):
    benchmark_suite.Options(workload="flow-tiled", tiled_models=("huge",))
  with pytest.raises(ValueError, match="--tile_batch_sizes has 0"):
    benchmark_suite.Options(workload="flow-tiled", tile_batch_sizes=(1, 0))


def test_measure_times_a_flow_training_step():
  """The initialised model predicts zero flow (its output layer starts at zero), so the loss
  of the first step is the mean length of the batch's true flow."""
  cfg = registry.get_model_config("flow_testing")
  case = workloads.Case("test", "flow", cfg, 2, task="flow")
  result = benchmarking.measure(case, dtype="float32", steps=1, warmup=0)
  true = np.asarray(workloads.flow_batch(cfg, 2)[1]["flow"])
  assert result["num_inputs"] == 32 * 48 and result["inference_s"] > 0
  assert result["train_flops_per_example"] == 3 * result["forward_flops_per_example"]
  # `measure` reports the loss of the step after the timed one: one LAMB step at 1e-3 moved
  # it by 0.2%.
  assert result["loss"] == pytest.approx(np.linalg.norm(true, axis=-1).mean(), rel=0.01)
