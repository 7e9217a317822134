"""Tests for perceiver_jax/fusion.py: the XLA:CPU fusion boundary."""

import jax
import jax.numpy as jnp
import numpy as np

from perceiver_jax import fusion


def _tree():
  key = jax.random.PRNGKey(0)
  return {"count": jnp.asarray(3, jnp.int32), "mu": jax.random.normal(key, (4, 8))}


def test_barrier_passes_values_unchanged_through_a_cpu_conditional():
  tree = _tree()
  out = jax.jit(fusion.barrier)(tree)
  np.testing.assert_array_equal(out["mu"], tree["mu"])
  assert out["count"] == 3 and out["count"].dtype == jnp.int32
  text = jax.jit(fusion.barrier).lower(tree).compile().as_text()
  assert "conditional(" in text
  plain = jax.jit(lambda t: jax.tree.map(lambda x: x + 0, t)).lower(tree).compile().as_text()
  assert "conditional(" not in plain


def test_barrier_keeps_a_nan_a_nan_and_leaves_integers_alone():
  tree = _tree()
  tree["mu"] = tree["mu"].at[0, 0].set(jnp.nan)
  out = jax.jit(fusion.barrier)(tree)
  assert np.isnan(out["mu"]).all()
  assert out["count"] == 3


def test_barrier_of_a_tree_without_floats_is_the_tree():
  tree = {"count": jnp.asarray(3, jnp.int32)}
  assert fusion.cpu_barrier(tree) is tree
