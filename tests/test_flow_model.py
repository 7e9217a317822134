"""The optical-flow model: 'flow' modality, flow decoder, `optical_flow` and `flow_testing`."""

import os
import pickle
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import flow as flow_config
from perceiver_jax import model
from perceiver_jax import official_format
from perceiver_jax import optimizer
from perceiver_jax import registry
from perceiver_jax.models import preprocessors

ROOT = os.path.join(os.path.dirname(__file__), "..")


def _linear(fan_in, fan_out):
  return {"w": (fan_in, fan_out), "b": (fan_out,)}


def _norm(width):
  return {"scale": (width,), "offset": (width,)}


def _cross_attention(prefix, q, kv, qk, v):
  """A cross-attend's modules as the release names them (qk and v: attention widths)."""
  return {
    f"{prefix}/layer_norm": _norm(q),
    f"{prefix}/layer_norm_1": _norm(kv),
    f"{prefix}/attention/linear": _linear(q, qk),
    f"{prefix}/attention/linear_1": _linear(kv, qk),
    f"{prefix}/attention/linear_2": _linear(kv, v),
    f"{prefix}/attention/linear_3": _linear(v, q),
    f"{prefix}/layer_norm_2": _norm(q),
    f"{prefix}/mlp/linear": _linear(q, q),
    f"{prefix}/mlp/linear_1": _linear(q, q),
  }


def _release_tree():
  """`optical_flow_checkpoint.pystate` as official_param_tree.md states it: inputs 322 wide
  (54 -> 64 patches_linear + 258 Fourier), latents 2,048 x 512, the cross-attends' qk and v
  widths those of their kv input, 24 self-attends, output (322, 2)."""
  tree = {
    "image_preprocessor/patches_linear": _linear(54, 64),
    "perceiver_encoder/~/trainable_position_encoding": {"pos_embs": (2048, 512)},
  }
  tree |= _cross_attention("perceiver_encoder/~/cross_attention", 512, 322, 322, 322)
  for i in range(24):
    prefix = "perceiver_encoder/~/self_attention" + (f"_{i}" if i else "")
    tree[f"{prefix}/layer_norm"] = _norm(512)
    tree[f"{prefix}/layer_norm_1"] = _norm(512)
    for suffix in ("", "_1", "_2", "_3"):
      tree[f"{prefix}/attention/linear{suffix}"] = _linear(512, 512)
    tree[f"{prefix}/mlp/linear"] = _linear(512, 512)
    tree[f"{prefix}/mlp/linear_1"] = _linear(512, 512)
  tree |= _cross_attention("flow_decoder/~/basic_decoder/cross_attention", 322, 512, 512, 512)
  tree["flow_decoder/~/basic_decoder/output"] = _linear(322, 2)
  return tree


def _frames(batch, height, width, seed=0):
  return np.random.default_rng(seed).uniform(-1, 1, (batch, 2, height, width, 3)).astype("f4")


def _init(cfg, seed=0):
  forward = model.build_model(cfg)
  params, state = forward.init(
    jax.random.PRNGKey(seed), model.dummy_inputs(cfg, 2), is_training=True
  )
  return forward, params, state


def test_released_model_has_the_release_tree():
  cfg = registry.get_model_config("optical_flow")
  assert model.input_channels(cfg) == 322
  params, state = model.param_shapes(cfg)
  assert state == {}
  shapes = {m: {k: v.shape for k, v in leaves.items()} for m, leaves in params.items()}
  expected = _release_tree()
  assert sorted(shapes) == sorted(expected)
  assert shapes == expected
  assert model.count_params(params) == 41_057_134


def test_summary_prints_the_release_total():
  result = subprocess.run(
    [sys.executable, "-m", "perceiver_jax.summary", "--config=configs/flow.py"],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
    check=True,
  )
  assert result.stdout.rstrip().endswith("Total parameters: 41057134")


def test_flow_patches_match_a_direct_loop():
  frames = _frames(2, 4, 5, seed=1)
  got = np.asarray(preprocessors.flow_patches(frames))
  batch, _, height, width, channels = frames.shape
  want = np.zeros((batch, height, width, 2 * 9 * channels), np.float32)
  for b in range(batch):
    for y in range(height):
      for x in range(width):
        values = []
        for t in range(2):
          for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
              for c in range(channels):
                inside = 0 <= y + dy < height and 0 <= x + dx < width
                values.append(frames[b, t, y + dy, x + dx, c] if inside else 0.0)
        want[b, y, x] = values
  np.testing.assert_array_equal(got, want)
  # Corners see 4 of their 9 neighbours per frame; the rest are zeros.
  assert np.count_nonzero(got[0, 0, 0]) == 2 * 4 * channels
  with pytest.raises(
    ValueError, match=r"frame pair \[B, 2, H, W, C\], got shape \(1, 3, 4, 5, 3\)"
  ):
    preprocessors.flow_patches(np.zeros((1, 3, 4, 5, 3), np.float32))


def test_tiny_forward_is_zero_at_init_and_scaled_by_rescale_and_output_scale():
  cfg = registry.get_model_config("flow_testing")
  forward, params, state = _init(cfg)
  frames = _frames(2, 32, 48)
  flow, _ = forward.apply(params, state, None, frames, is_training=False)
  assert flow.shape == (2, 32, 48, 2) and flow.dtype == np.float32
  np.testing.assert_array_equal(flow, 0.0)  # zero-initialised output projection
  # With a non-zero output projection the flow differs per pixel and per pair, and is the
  # decoder's output divided by the rescale factor and multiplied by the output scale.
  p2 = jax.tree.map(lambda x: x, params)
  out = "flow_decoder/~/basic_decoder/output"
  p2[out] = {
    "w": jax.random.normal(jax.random.PRNGKey(1), params[out]["w"].shape),
    "b": np.array([1.0, 2.0], np.float32),
  }
  flow, _ = forward.apply(p2, state, None, frames, is_training=False)
  assert np.all(np.isfinite(flow)) and np.std(flow[..., 0]) > 1e-4
  assert not np.allclose(flow[0], flow[1])
  cfg.flow.rescale_factor = 50.0
  doubled, _ = model.build_model(cfg).apply(p2, state, None, frames, is_training=False)
  np.testing.assert_allclose(doubled, 2 * flow, rtol=1e-5, atol=1e-7)
  cfg.flow.output_scale = 60.0  # 3x the released 20
  tripled, _ = model.build_model(cfg).apply(p2, state, None, frames, is_training=False)
  np.testing.assert_allclose(tripled, 6 * flow, rtol=1e-5, atol=1e-7)


def test_flow_decoder_and_modality_go_together():
  cfg = registry.get_model_config("testing")
  cfg.decoder.type = "flow"
  with pytest.raises(ValueError, match="config.model.decoder.type='flow'"):
    model.validate_model_config(cfg)
  cfg = registry.get_model_config("flow_testing")
  cfg.decoder.type = "classification"
  with pytest.raises(ValueError, match="config.model.decoder.type='classification'"):
    model.validate_model_config(cfg)
  cfg = registry.get_model_config("flow_testing")
  cfg.input_shape = (3, 32, 48, 3)
  with pytest.raises(ValueError, match=r"config.model.input_shape=\(3, 32, 48, 3\)"):
    model.validate_model_config(cfg)
  cfg = registry.get_model_config("flow_testing")
  cfg.flow.rescale_factor = 0.0
  with pytest.raises(ValueError, match="config.model.flow.rescale_factor=0.0"):
    model.validate_model_config(cfg)
  cfg = registry.get_model_config("flow_testing")
  cfg.flow.output_scale = -1.0
  with pytest.raises(ValueError, match="config.model.flow.output_scale=-1.0"):
    model.validate_model_config(cfg)


def test_bare_params_pickle_round_trips_bit_exactly(tmp_path):
  cfg = registry.get_model_config("flow_testing")
  forward, params, state = _init(cfg, seed=3)
  out = "flow_decoder/~/basic_decoder/output"
  params[out] = {"w": params[out]["w"] + 0.01, "b": params[out]["b"]}  # non-zero flow
  path = str(tmp_path / "flow.pystate")
  official_format.save_official_pickle(path, params, bare=True)
  with open(path, "rb") as f:
    raw = pickle.load(f)
  assert "params" not in raw and "image_preprocessor/patches_linear" in raw
  loaded, loaded_state = official_format.load_official_pickle(path)
  assert loaded_state == {}
  official_format.check_tree(model.param_shapes(cfg)[0], loaded)
  for module, leaves in params.items():
    for name, value in leaves.items():
      np.testing.assert_array_equal(loaded[module][name], np.asarray(value))
  frames = _frames(1, 32, 48, seed=2)
  a, _ = forward.apply(params, state, None, frames, is_training=False)
  b, _ = forward.apply(loaded, {}, None, frames, is_training=False)
  assert np.any(np.asarray(a) != 0)
  np.testing.assert_array_equal(a, b)


def test_config_builds_the_release_model_with_the_paper_recipe():
  config = flow_config.get_config()
  assert config.variant == "optical_flow" and config.model == registry.optical_flow()
  assert config.batch_size == 512 and config.num_epochs == 480
  opt = config.optimizer
  assert (opt.name, opt.learning_rate, opt.scale_lr_by_batch) == ("lamb", 4e-4, False)
  assert (opt.schedule, opt.warmup_steps) == ("warmup_cosine", 0)
  optimizer.validate_optimizer_config(opt)
  # AutoFlow: 400k pairs, 781 steps per epoch at batch 512; cosine from 4e-4 at the first step.
  schedule = optimizer.learning_rate_schedule(
    opt, total_steps=480 * 781, steps_per_epoch=781, batch_size=512
  )
  np.testing.assert_allclose(schedule(0), 4e-4, rtol=1e-6)
  np.testing.assert_allclose(schedule(240 * 781), 2e-4, rtol=1e-4)
  assert float(schedule(480 * 781)) < 1e-9
  assert config.data.name == "flow"
  local = flow_config.get_config("runlocal")
  assert local.variant == "flow_testing" and local.model.input_shape == (2, 32, 48, 3)
  assert model.count_params(model.param_shapes(local.model)[0]) > 0


def test_query_residual_adds_each_pixels_inputs_to_what_it_reads_from_the_latents():
  """`decoder.use_query_residual` (off in the release) keeps the parameter tree and changes the
  output by the queries themselves, added to the decoder's attention output."""
  cfg = registry.get_model_config("flow_testing")
  forward, params, state = _init(cfg)
  out = "flow_decoder/~/basic_decoder/output"
  params[out] = {
    "w": jax.random.normal(jax.random.PRNGKey(2), params[out]["w"].shape),
    "b": params[out]["b"],
  }
  frames = _frames(1, 32, 48)
  plain, _ = forward.apply(params, state, None, frames, is_training=False)
  cfg.decoder.use_query_residual = True
  residual_forward = model.build_model(cfg)
  residual_params, _ = residual_forward.init(jax.random.PRNGKey(0), frames, is_training=False)
  assert jax.tree.map(np.shape, residual_params) == jax.tree.map(np.shape, params)
  with_residual, _ = residual_forward.apply(params, state, None, frames, is_training=False)
  assert with_residual.shape == plain.shape
  assert np.abs(np.asarray(with_residual) - np.asarray(plain)).mean() > 1e-3
