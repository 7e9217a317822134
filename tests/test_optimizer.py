"""Tests for perceiver_jax/optimizer.py: weight-decay mask, schedules, LAMB parity, the
in-place update of the donated Adam moments."""

import math
import re
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from perceiver_jax import model
from perceiver_jax import optimizer
from perceiver_jax import registry
from perceiver_jax.tools import benchmark_workloads
from perceiver_jax.tools import benchmarking


def _config(**overrides):
  cfg = optimizer.default_optimizer_config()
  cfg.update(overrides)
  return cfg


# (decayed leaves without / with pos_embs, all leaves). io_conv: 36 self-attention
# kernels (6 layers x 4 attention + 2 MLP), 6 encoder and 6 decoder cross-attention
# kernels, the decoder output kernel and the 7x7 conv = 50; pos_embs are the latents
# and the decoder query. io_learned: the 1x1 conv and the position projector replace
# the 7x7 conv (51), plus the learned input positions (3 pos_embs).
@pytest.mark.parametrize(
  "name, decayed, with_pos, total",
  [
    ("io_conv", 50, 52, 139),
    ("io_learned", 51, 54, 141),
  ],
)
def test_weight_decay_mask_on_real_parameter_trees(name, decayed, with_pos, total):
  params, _ = model.param_shapes(registry.get_model_config(name))
  for decay_pos in (False, True):
    mask = optimizer.weight_decay_mask(params, decay_position_embeddings=decay_pos)
    assert jax.tree.structure(mask) == jax.tree.structure(params)
    for module, leaves in mask.items():
      for leaf, decays in leaves.items():
        expected = leaf == "w" or (leaf == "pos_embs" and decay_pos)
        assert decays is expected, (module, leaf)
    assert sum(jax.tree.leaves(mask)) == (with_pos if decay_pos else decayed)
    assert len(jax.tree.leaves(mask)) == total


def test_weight_decay_mask_rejects_unknown_parameters():
  with pytest.raises(ValueError, match="no rule for parameter mlp/linear/gamma"):
    optimizer.weight_decay_mask({"mlp/linear": {"gamma": jnp.ones(3)}})
  # `scale` is exempt only inside a norm module.
  with pytest.raises(ValueError, match="no rule for parameter encoder/gain/scale"):
    optimizer.weight_decay_mask({"encoder/gain": {"scale": jnp.ones(3)}})


def _schedule(total_steps=1000, steps_per_epoch=10, batch_size=256, **overrides):
  return optimizer.learning_rate_schedule(
    _config(**overrides),
    total_steps=total_steps,
    steps_per_epoch=steps_per_epoch,
    batch_size=batch_size,
  )


def test_step_schedule_divides_at_the_decay_epochs():
  lr = 0.004  # the Perceiver's ImageNet recipe: 120 epochs, here of 10 steps
  sched = _schedule(total_steps=1200, learning_rate=lr, scale_lr_by_batch=False, schedule="step")
  expected = {
    0: lr,
    839: lr,
    840: lr / 10,
    1019: lr / 10,
    1020: lr / 100,
    1139: lr / 100,
    1140: lr / 1000,
    1199: lr / 1000,
  }
  for step, value in expected.items():
    np.testing.assert_allclose(sched(step), value, rtol=1e-6, err_msg=f"step {step}")
  np.testing.assert_allclose(jax.jit(sched)(jnp.int32(840)), lr / 10, rtol=1e-6)


def test_constant_cosine_schedule():
  lr = 2e-3
  sched = _schedule(learning_rate=lr, scale_lr_by_batch=False, schedule="constant_cosine")
  for step, value in {0: lr, 499: lr, 500: lr, 750: lr / 2, 1000: 0.0, 1200: 0.0}.items():
    np.testing.assert_allclose(sched(step), value, rtol=1e-6, atol=1e-12, err_msg=f"{step}")
  assert float(sched(501)) < lr
  flat = _schedule(learning_rate=lr, scale_lr_by_batch=False, constant_fraction=1.0)
  np.testing.assert_allclose(flat(999), lr, rtol=1e-6)


def test_warmup_cosine_schedule():
  lr = 1e-3
  sched = _schedule(
    learning_rate=lr, scale_lr_by_batch=False, schedule="warmup_cosine", warmup_steps=100
  )
  for step, value in {0: 0.0, 50: lr / 2, 100: lr, 550: lr / 2, 1000: 0.0}.items():
    np.testing.assert_allclose(sched(step), value, rtol=1e-6, atol=1e-12, err_msg=f"{step}")


def test_learning_rate_scales_with_batch_size():
  scaled = _schedule(batch_size=1024, learning_rate=5e-4, schedule="constant")
  np.testing.assert_allclose(scaled(123), 2e-3, rtol=1e-6)  # Perceiver IO's ImageNet lr
  plain = _schedule(
    batch_size=1024, learning_rate=5e-4, schedule="constant", scale_lr_by_batch=False
  )
  np.testing.assert_allclose(plain(123), 5e-4, rtol=1e-6)


@pytest.mark.parametrize(
  "overrides, message",
  [
    (dict(schedule="linear"), "config.optimizer.schedule='linear': unknown schedule"),
    (
      dict(schedule="step", decay_epochs=(84, 102, 130)),
      r"config.optimizer.decay_epochs=\(84, 102, 130\): epoch 130 is at or beyond the end",
    ),
    (dict(schedule="step", decay_epochs=(84, 84)), "must be positive and strictly increasing"),
    (dict(constant_fraction=1.5), "config.optimizer.constant_fraction=1.5: must be in"),
    (dict(constant_fraction=-0.1), "config.optimizer.constant_fraction=-0.1: must be in"),
    (dict(schedule="warmup_cosine", warmup_steps=1200), "config.optimizer.warmup_steps=1200"),
    (dict(learning_rate=0.0), "config.optimizer.learning_rate=0.0: must be positive"),
    (dict(b2=1.0), "config.optimizer.b2=1.0: must be in"),
    (dict(clip_global_norm=-1.0), "config.optimizer.clip_global_norm=-1.0"),
    (dict(name="sgd"), "config.optimizer.name='sgd': unknown optimizer"),
    # NaN passes `<= 0` checks, inf makes the updates non-finite: both must be refused.
    (dict(learning_rate=float("nan")), "config.optimizer.learning_rate=nan: must be finite"),
    (dict(learning_rate=float("inf")), "config.optimizer.learning_rate=inf: must be finite"),
    (dict(eps=float("nan")), "config.optimizer.eps=nan: must be finite"),
    (dict(weight_decay=float("nan")), "config.optimizer.weight_decay=nan: must be finite"),
    (dict(weight_decay=float("inf")), "config.optimizer.weight_decay=inf: must be finite"),
    (dict(clip_global_norm=float("nan")), "config.optimizer.clip_global_norm=nan: must be finite"),
    (dict(clip_global_norm=float("inf")), "config.optimizer.clip_global_norm=inf: must be finite"),
    (
      dict(schedule="step", decay_epochs=(1,), decay_factor=float("nan")),
      "config.optimizer.decay_factor=nan: must be finite",
    ),
  ],
)
def test_validation_names_field_and_value(overrides, message):
  with pytest.raises(ValueError, match=message):
    _schedule(total_steps=1200, **overrides)


def _small_tree(rng):
  return {
    "mlp/linear": {"w": rng.normal(size=(3, 4)), "b": rng.normal(size=(4,))},
    "mlp/layer_norm": {"scale": rng.normal(size=(4,)), "offset": np.zeros(4)},
    "encoder/trainable_position_encoding": {"pos_embs": rng.normal(size=(2, 4))},
  }


def _numpy_lamb(params, grads_per_step, *, lr, b1, b2, eps, wd, decay, clip, trust_ratio=True):
  """LAMB as in You et al. 2020 with optax's conventions, in float64 numpy (without the trust
  ratio: AdamW with decoupled weight decay)."""
  params = {m: {k: np.array(v) for k, v in leaves.items()} for m, leaves in params.items()}
  m = {mod: {k: np.zeros_like(v) for k, v in leaves.items()} for mod, leaves in params.items()}
  v = {mod: {k: np.zeros_like(x) for k, x in leaves.items()} for mod, leaves in params.items()}
  for t, grads in enumerate(grads_per_step, start=1):
    norm = np.sqrt(sum(np.sum(g**2) for leaves in grads.values() for g in leaves.values()))
    scale = min(1.0, clip / norm) if clip > 0 else 1.0
    for mod, leaves in params.items():
      for k, w in leaves.items():
        g = grads[mod][k] * scale
        m[mod][k] = b1 * m[mod][k] + (1 - b1) * g
        v[mod][k] = b2 * v[mod][k] + (1 - b2) * g**2
        u = (m[mod][k] / (1 - b1**t)) / (np.sqrt(v[mod][k] / (1 - b2**t)) + eps)
        if decay[mod][k]:
          u = u + wd * w
        w_norm, u_norm = np.linalg.norm(w), np.linalg.norm(u)
        ratio = w_norm / u_norm if w_norm > 0 and u_norm > 0 and trust_ratio else 1.0
        leaves[k] = w - lr(t - 1) * ratio * u  # optax counts the first update as step 0
  return params


@pytest.mark.parametrize("name", ["lamb", "adamw"])
@pytest.mark.parametrize("clip", [0.0, 1.0])
def test_optimizer_matches_numpy_reference(clip, name):
  rng = np.random.default_rng(0)
  params = _small_tree(rng)
  grads = [jax.tree.map(lambda x: 3.0 * rng.normal(size=x.shape), params) for _ in range(2)]
  hyper = dict(name=name, b1=0.9, b2=0.99, eps=1e-2, weight_decay=0.1, clip_global_norm=clip)
  cfg = _config(**hyper)

  def lr(step):
    return 0.05 * (step + 1)

  opt = optimizer.make_optimizer(cfg, lr)
  state = opt.init(jax.tree.map(jnp.float32, params))
  ours = jax.tree.map(jnp.float32, params)
  for g in grads:
    updates, state = opt.update(jax.tree.map(jnp.float32, g), state, ours)
    ours = optax.apply_updates(ours, updates)

  decay = optimizer.weight_decay_mask(params)
  assert not decay["encoder/trainable_position_encoding"]["pos_embs"]
  expected = _numpy_lamb(
    params,
    grads,
    lr=lr,
    b1=0.9,
    b2=0.99,
    eps=1e-2,
    wd=0.1,
    decay=decay,
    clip=clip,
    trust_ratio=name == "lamb",
  )
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), ours, expected)
  # The zero-norm `offset` moved with trust ratio 1 (optax's convention).
  assert np.any(np.asarray(ours["mlp/layer_norm"]["offset"]) != 0)


def test_clipping_caps_the_global_gradient_norm():
  # Zero params make the trust ratio 1; with b1 = b2 = 0 and a huge eps, LAMB's
  # update is -lr * clipped_grad / eps, so the clipped gradient can be read off.
  params = {"linear": {"w": jnp.zeros((4, 5)), "b": jnp.zeros(5)}}
  grads = jax.tree.map(lambda x: jnp.full(x.shape, 10.0), params)  # global norm 50
  cfg = _config(b1=0.0, b2=0.0, eps=1e8, clip_global_norm=2.5)
  opt = optimizer.make_optimizer(cfg, optax.constant_schedule(1.0))
  updates, _ = opt.update(grads, opt.init(params), params)
  clipped = jax.tree.map(lambda u: -u * 1e8, updates)
  np.testing.assert_allclose(optax.tree.norm(clipped), 2.5, rtol=1e-5)
  np.testing.assert_allclose(clipped["linear"]["w"], 10.0 * 2.5 / 50.0, rtol=1e-5)


def test_optimizer_steps_the_testing_model():
  params, _ = model.param_shapes(registry.get_model_config("testing"))
  params = jax.tree.map(lambda s: jnp.full(s.shape, 0.5, s.dtype), params)
  opt = optimizer.make_optimizer(_config(), _schedule(schedule="constant"))
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = jax.jit(opt.update)(grads, opt.init(params), params)
  assert all(np.all(np.isfinite(u)) for u in jax.tree.leaves(updates))
  assert optax.tree.norm(updates) > 0


def test_dot_product_norms_equal_optax():
  rng = np.random.default_rng(0)
  tree = {"a": jnp.asarray(rng.normal(size=(37, 5))), "b": jnp.asarray(rng.normal(size=(7,)))}
  params = {"a": jnp.asarray(rng.normal(size=(37, 5))), "b": jnp.zeros(7)}
  np.testing.assert_allclose(optimizer.global_norm(tree), optax.tree.norm(tree), rtol=1e-6)
  for ours, theirs in (
    (optimizer.scale_by_trust_ratio(), optax.scale_by_trust_ratio()),
    (optimizer.clip_by_global_norm(2.0), optax.clip_by_global_norm(2.0)),
    (optimizer.scale_by_adam(0.9, 0.999, 1e-6), optax.scale_by_adam(eps=1e-6)),
  ):
    expected, _ = theirs.update(tree, theirs.init(params), params)
    got, state = ours.update(tree, ours.init(params), params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), got, expected)
    assert jax.tree.structure(state) == jax.tree.structure(theirs.init(params))


def _copied_argument_elements(hlo_text: str) -> list[int]:
  """Sizes of the float32 copies that a compiled program makes of its own arguments."""
  entry = hlo_text[hlo_text.index("\nENTRY") :]
  arguments = set(re.findall(r"%(\S+) = \S+ parameter\(\d+\)", entry))
  return [
    math.prod(int(d) for d in shape.split(",") if d)
    for shape, operand in re.findall(r"= f32\[([\d,]*)\]\S* copy\(%(\S+?)\)", entry)
    if operand in arguments
  ]


def test_donated_adam_moments_are_updated_in_place():
  # Without the fusion barrier on the new moments (`optimizer.scale_by_adam`), XLA:CPU
  # copied every moment of this model's donated state at the start of the step (190
  # copies, twice the parameters' 22 MiB); with it, only a few bias-sized vectors remain.
  cfg = benchmark_workloads._pixels_model(16)
  cfg.update(num_latents=128, num_latent_channels=512, num_blocks=2, num_self_attends_per_block=2)
  compiled = {}
  with mock.patch.object(
    benchmarking, "_xla_bytes", side_effect=lambda c: compiled.setdefault("step", c) and None
  ):
    _, facts = benchmarking.prepare_train_step(
      benchmark_workloads.Case("test", "test", cfg, 2), dtype="float32"
    )
  copied = _copied_argument_elements(compiled["step"].as_text())
  assert sum(copied) < 0.01 * facts["num_params"], (len(copied), sum(copied))


@pytest.mark.parametrize("name", ["lamb", "adamw"])
def test_optimizer_state_has_optax_structure(name):
  # Checkpoints written with optax.lamb / optax.adamw states must keep loading.
  params = {"linear": {"w": jnp.ones((3, 4)), "b": jnp.zeros(4)}}
  cfg = _config(name=name, clip_global_norm=0.0)
  schedule = optax.constant_schedule(1e-3)
  ours = optimizer.make_optimizer(cfg, schedule).init(params)
  mask = lambda p: jax.tree.map(lambda _: True, p)  # noqa: E731
  if name == "lamb":
    reference = optax.chain(
      optax.scale_by_adam(),
      optax.add_decayed_weights(0.1, mask),
      optax.scale_by_trust_ratio(),
      optax.scale_by_learning_rate(schedule),
    )
  else:
    reference = optax.adamw(schedule, weight_decay=0.1, mask=mask)
  reference = reference.init(params)
  assert jax.tree.structure(ours) == jax.tree.structure(reference)
