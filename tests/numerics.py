"""Float comparisons for the tests, scaled to the quantity compared.

Two float32 computations of one function that sum in another order (chunked attention, a
batch split over devices, another CPU's vector width) differ by rounding: a few float32
epsilons (1.2e-7) of the size of the terms summed, which is the size of the result, not of
each element. An element near zero can then differ by far more than its own magnitude, so
elementwise `rtol` or a fixed `atol` tuned on one machine is either too tight or too loose.
These helpers bound the largest error of an array by a fraction of its largest magnitude;
a real bug (a dropped chunk, a gradient not averaged over devices) moves results by a sizable
fraction of their scale, orders of magnitude above the bounds the tests use.

Some parameters have a zero gradient in exact arithmetic, so whatever they hold is rounding
noise with no scale of its own: the key biases (`attention/linear_1/b`), because softmax is
invariant to adding the same logit to every key (`q . (k + b)` shifts each query's logits by
`q . b`). `split_key_biases` separates them, for the tests to assert them on their own.
"""

from __future__ import annotations

import re

import haiku as hk
import jax
import numpy as np

_KEY_PROJECTION = re.compile(r"(^|/)attention(_\d+)?/linear_1$")


def scale(x) -> float:
  """The largest magnitude of `x` (an array or a pytree of arrays)."""
  return max(float(np.max(np.abs(np.asarray(leaf, np.float64)))) for leaf in jax.tree.leaves(x))


def relative_error(actual, expected) -> float:
  """max |actual - expected| / max |expected|, in float64 (inf if `expected` is all zero
  while `actual` is not)."""
  actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
  assert actual.shape == expected.shape, (actual.shape, expected.shape)
  error = float(np.max(np.abs(actual - expected), initial=0.0))
  reference = scale(expected)
  if reference == 0.0:
    return 0.0 if error == 0.0 else float("inf")
  return error / reference


def assert_close_to_scale(actual, expected, rtol: float, what: str = "") -> None:
  """Asserts max |actual - expected| <= rtol * max |expected|."""
  error = relative_error(actual, expected)
  assert error <= rtol, f"{what}: max error is {error:.3g} of the largest magnitude > {rtol:g}"


def assert_trees_close_to_scale(actual, expected, rtol: float) -> None:
  """`assert_close_to_scale` leaf by leaf: each leaf against its own largest magnitude."""
  paths_actual = jax.tree_util.tree_leaves_with_path(actual)
  leaves_expected = jax.tree.leaves(expected)
  assert len(paths_actual) == len(leaves_expected)
  for (path, a), b in zip(paths_actual, leaves_expected, strict=True):
    assert_close_to_scale(a, b, rtol, jax.tree_util.keystr(path))


def split_key_biases(params: hk.Params) -> tuple[hk.Params, hk.Params]:
  """(every other parameter, the key biases): a Haiku parameter tree split in two."""
  key_biases, others = hk.data_structures.partition(
    lambda module, name, _: name == "b" and _KEY_PROJECTION.search(module) is not None, params
  )
  return others, key_biases
