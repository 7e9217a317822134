"""A fusion boundary for XLA:CPU: values it must write out before anything reads them.

XLA:CPU fuses chains of elementwise operations into single kernels and copies a cheap
producer into every consumer that reads it, so an intermediate value is often recomputed
where it is used instead of being stored once. A conditional is a boundary that its fusion
never crosses: what goes in is computed and written out first. `barrier` passes a pytree
through one conditional whose predicate is unknown at compile time; both branches pass the
values on unchanged, except that a leaf whose first element is NaN becomes all NaN (which
a diverged computation is anyway). Other platforms fuse differently and get the identity.

Where it is used:
  * `attention_kernels.gradient_barrier`: the residual stream's gradient at the end of each
    block, so that no kernel recomputes the backward chain across blocks;
  * `optimizer.make_optimizer`: the Adam moments, so that the donated optimizer state is
    updated in place rather than copied every step.
The README's "Performance" section has the measurements.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _is_float(x) -> bool:
  return jnp.issubdtype(jnp.result_type(x), jnp.floating)


def cpu_barrier(tree):
  """The fusion boundary itself (on any platform): `tree` through one conditional."""
  floats = [x for x in jax.tree.leaves(tree) if _is_float(x)]
  if not floats:
    return tree
  first = jnp.reshape(floats[-1], -1)[0]

  def poisoned(t):
    return jax.tree.map(lambda x: jnp.full_like(x, jnp.nan) if _is_float(x) else x, t)

  return jax.lax.cond(jnp.isnan(first), poisoned, lambda t: t, tree)


def barrier(tree):
  """`tree` unchanged; on XLA:CPU written out before any consumer reads it (`cpu_barrier`)."""
  return jax.lax.platform_dependent(tree, cpu=cpu_barrier, default=lambda t: t)
