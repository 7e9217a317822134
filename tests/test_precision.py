"""Tests for perceiver_jax/models/precision.py: bfloat16 compute from float32 parameters."""

import json

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tiny_training

from perceiver_jax import losses
from perceiver_jax import model
from perceiver_jax import registry
from perceiver_jax import train
from perceiver_jax.models import precision


def _config(name="testing", compute_dtype="float32", **overrides):
  cfg = registry.get_model_config(name)
  cfg.compute_dtype = compute_dtype
  for field, value in overrides.items():
    cfg[field] = value
  return cfg


def _flat(tree) -> dict:
  return {
    jax.tree_util.keystr(path): (leaf.shape, leaf.dtype)
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
  }


@pytest.mark.parametrize("name", registry.names())
def test_bfloat16_model_has_the_float32_parameters_and_state(name):
  params, state = model.param_shapes(_config(name, "bfloat16"))
  params_f32, state_f32 = model.param_shapes(_config(name, "float32"))
  assert _flat(params) == _flat(params_f32)
  assert _flat(state) == _flat(state_f32)  # BatchNorm statistics included
  assert {dtype for _, dtype in _flat(params).values()} == {jnp.dtype(jnp.float32)}


# Plain attention, and the chunked + remat path whose shared blocks run through `hk.scan`.
PATHS = {
  "plain": {},
  "chunked_remat": {"attention_chunk_size": 100, "remat": True, "num_cross_attends": 2},
}


@pytest.mark.parametrize("path", PATHS)
def test_bfloat16_loss_matches_float32(path):
  images = jax.random.uniform(jax.random.PRNGKey(0), (8, 32, 32, 3))
  labels = jnp.arange(8) % 10
  results = {}
  for dtype in precision.COMPUTE_DTYPES:
    forward = model.build_model(_config("testing", dtype, **PATHS[path]))
    params, state = jax.jit(
      lambda images, forward=forward: forward.init(jax.random.PRNGKey(1), images, is_training=True)
    )(images)
    logits, _ = jax.jit(forward.apply, static_argnames="is_training")(
      params, state, None, images, is_training=False
    )
    results[dtype] = params, logits, losses.softmax_cross_entropy(logits, labels)
  params, logits, loss = results["bfloat16"]
  params_f32, _, loss_f32 = results["float32"]
  # The same initialisation: creation in float32 draws the same numbers.
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params_f32), strict=True):
    np.testing.assert_array_equal(a, b)
  assert logits.dtype == jnp.float32
  # Measured relative differences: 5.7e-4 (plain) and 2.4e-3 (chunked + remat). bfloat16
  # rounds each parameter, input and activation by up to 2^-9 relative, and over the
  # layers of this model that adds up to a few 1e-3 of the loss; 1e-2 leaves a factor of
  # four for other platforms' summation orders.
  assert float(loss) == pytest.approx(float(loss_f32), rel=1e-2)


def _primitive_eqns(jaxpr, name: str):
  """Every equation of primitive `name`, also inside nested jaxprs (jit, scan, remat)."""
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == name:
      yield eqn
    for param in eqn.params.values():
      for sub in param if isinstance(param, (tuple, list)) else (param,):
        sub = getattr(sub, "jaxpr", sub)  # a ClosedJaxpr holds its Jaxpr
        if hasattr(sub, "eqns"):
          yield from _primitive_eqns(sub, name)


def _input_dtypes(cfg, primitive: str) -> list[tuple]:
  """(operand dtypes, output dtype) of each `primitive` in the traced forward pass."""
  forward = model.build_model(cfg)
  params, state = model.param_shapes(cfg)
  images = jax.ShapeDtypeStruct((2, *cfg.input_shape), jnp.float32)
  jaxpr = jax.make_jaxpr(lambda p, s, x: forward.apply(p, s, None, x, is_training=True))(
    params, state, images
  )
  return [
    (tuple(v.aval.dtype.name for v in eqn.invars), eqn.outvars[0].aval.dtype.name)
    for eqn in _primitive_eqns(jaxpr.jaxpr, primitive)
  ]


@pytest.mark.parametrize("path", PATHS)
def test_bfloat16_matmuls_with_float32_logits_and_normalisation(path):
  dots = _input_dtypes(_config("testing", "bfloat16", **PATHS[path]), "dot_general")
  dots_f32 = _input_dtypes(_config("testing", "float32", **PATHS[path]), "dot_general")
  assert len(dots) == len(dots_f32) > 0
  assert {inputs for inputs, _ in dots_f32} == {("float32", "float32")}
  assert {inputs for inputs, _ in dots} == {("bfloat16", "bfloat16")}
  # Every bfloat16 product accumulates in float32 (`precision.dot`, `precision.einsum`): the
  # only bfloat16 product that XLA:CPU runs on the CPU's bfloat16 units.
  assert {output for _, output in dots} == {"float32"}
  # LayerNorm: the only rsqrt, applied to the float32 variance.
  rsqrts = _input_dtypes(_config("testing", "bfloat16", **PATHS[path]), "rsqrt")
  assert rsqrts and {inputs for inputs, _ in rsqrts} == {("float32",)}


def test_batch_norm_statistics_stay_float32():
  cfg = _config("fmnist_convnet_ff", "bfloat16")
  forward = model.build_model(cfg)
  images = jax.random.uniform(jax.random.PRNGKey(0), (4, *cfg.input_shape))
  params, state = jax.jit(lambda x: forward.init(jax.random.PRNGKey(1), x, is_training=True))(
    images
  )
  logits, new_state = jax.jit(forward.apply, static_argnames="is_training")(
    params, state, None, images, is_training=True
  )
  assert logits.dtype == jnp.float32
  assert _flat(new_state) == _flat(state)
  means = new_state["convnet/stem_batchnorm/~/mean_ema"]["average"]
  assert means.dtype == jnp.float32 and np.any(np.asarray(means) != 0)
  rsqrts = _input_dtypes(cfg, "rsqrt")
  assert rsqrts and {inputs for inputs, _ in rsqrts} == {("float32",)}


def test_bfloat16_training_run_learns_with_float32_parameters(data_dir, tmp_path):
  config = tiny_training.tiny_config(
    data_dir, total_steps=8, log_every_steps=1, eval_every_steps=8, checkpoint_every_steps=8
  )
  config.model.compute_dtype = "bfloat16"
  state = train.train_and_evaluate(config, str(tmp_path))
  with open(tmp_path / "metrics.jsonl") as f:
    train_losses = [m["train/loss"] for m in map(json.loads, f) if "train/loss" in m]
  assert len(train_losses) == 8 and np.all(np.isfinite(train_losses))
  # Each step sees another batch, so single steps are noisy; the float32 run of the same
  # config goes 2.30 -> 1.74 (mean of the last four), the bfloat16 run within 0.01 of it.
  assert np.mean(train_losses[-4:]) < train_losses[0] - 0.3
  assert {leaf.dtype for leaf in jax.tree.leaves(state.params)} == {jnp.dtype(jnp.float32)}
  assert {leaf.dtype for leaf in jax.tree.leaves(state.opt_state) if leaf.ndim} == {
    jnp.dtype(jnp.float32)
  }


def test_bfloat16_dot_gradients_accumulate_in_float32_and_match_autodiff():
  """`precision.dot`'s backward pass: bfloat16 x bfloat16 -> float32 products, with the
  gradients of the plain float32 product to bfloat16 accuracy."""
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  x = jax.random.normal(keys[0], (3, 5, 64), jnp.float32)
  w = jax.random.normal(keys[1], (64, 32), jnp.float32) / 8
  cotangent = jax.random.normal(keys[2], (3, 5, 32), jnp.float32)

  def loss(x, w):
    return jnp.sum(precision.dot(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16)) * cotangent)

  grads = jax.grad(loss, argnums=(0, 1))(x, w)
  reference = jax.grad(lambda x, w: jnp.sum((x @ w) * cotangent), argnums=(0, 1))(x, w)
  for got, want in zip(grads, reference, strict=True):
    assert got.dtype == jnp.float32
    # bfloat16 keeps 8 significant bits: errors of a few 1e-3 of the scale; a wrong
    # transpose or a missing term would be off by the whole scale.
    scale = float(jnp.max(jnp.abs(want)))
    assert float(jnp.max(jnp.abs(got - want))) < 3e-2 * scale
  jaxpr = jax.make_jaxpr(jax.grad(loss, argnums=(0, 1)))(x, w)
  dots = [
    (tuple(v.aval.dtype.name for v in eqn.invars), eqn.outvars[0].aval.dtype.name)
    for eqn in _primitive_eqns(jaxpr.jaxpr, "dot_general")
  ]
  assert len(dots) == 3  # forward, d_x, d_w
  assert set(dots) == {(("bfloat16", "bfloat16"), "float32")}


def test_float32_linear_is_haiku_linear():
  """`precision.Linear` on float32 inputs: `hk.Linear`'s parameters and exact result."""
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 7))
  ours = hk.transform(lambda x: precision.Linear(5, name="linear")(x))
  haiku = hk.transform(lambda x: hk.Linear(5, name="linear")(x))
  params = haiku.init(jax.random.PRNGKey(1), x)
  assert jax.tree.map(jnp.shape, ours.init(jax.random.PRNGKey(1), x)) == jax.tree.map(
    jnp.shape, params
  )
  np.testing.assert_array_equal(ours.apply(params, None, x), haiku.apply(params, None, x))
