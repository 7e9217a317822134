"""Loading pretrained weights into a model: for fine-tuning, and for tools that use a trained run.

`load_pretrained` reads weights in any format of `weight_formats` (an official-format pickle,
this package's safetensors, a transformers folder, or a `Checkpointer` directory: see
`checkpointing.py`; a step's arrays are checked against its `checksums.json`) and fits the file's
params and state to a freshly initialised model, keeping the model's own values for excluded
modules: the head (`HEAD_MODULES`) when fine-tuning on another label set, and the language
model's pretraining head (`PRETRAINING_HEADS`) when the new model lacks it.
`load_trained_model` builds a run's model and loads its newest checkpoint.

Params and state are `{module path: {leaf name: array}}` mappings, e.g.
`{"perceiver_encoder/~/cross_attention/...": {"w": [C_in, C_out]}}`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import haiku as hk
import jax
import orbax.checkpoint as ocp
from absl import logging

from perceiver_jax import checksums
from perceiver_jax import model
from perceiver_jax import official_format
from perceiver_jax import weight_formats
from perceiver_jax.official_format import CheckpointFormatError


def _open_read_only(directory: str) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(read_only=True))


def read_orbax(path: str) -> tuple[Mapping, Mapping]:
  """`(params, state)` of a `Checkpointer` directory's newest step, of `directory/<step>`, or
  of a training workdir (its `checkpoints/`), checked against the step's checksums (a step
  without them loads with a warning)."""
  if os.path.isdir(os.path.join(path, "checkpoints")):
    path = os.path.join(path, "checkpoints")
  path = os.path.abspath(path)
  parent, name = os.path.split(path)
  with _open_read_only(parent) as manager:
    is_step_dir = name.isdigit() and int(name) in manager.all_steps()
  directory, step = (parent, int(name)) if is_step_dir else (path, None)
  with _open_read_only(directory) as manager:
    step = manager.latest_step() if step is None else step
    if step is None:
      raise CheckpointFormatError(f"{path}: no complete orbax checkpoint")
    # No template: the optimizer state is not needed, and need not fit the new model.
    content = manager.restore(step, args=ocp.args.StandardRestore())
  where = os.path.join(directory, str(step))
  if not isinstance(content, Mapping) or "params" not in content:
    raise CheckpointFormatError(f"{where}: not a TrainState checkpoint")
  params, state = content["params"], content.get("state") or {}
  sums = checksums.read(where)
  if sums is None:
    logging.warning("%s has no %s: loading it unverified.", where, checksums.FILE)
  else:
    checksums.verify(where, {"params": params, "state": state}, sums, partial=True)
  return params, state


def read_weights(path: str) -> tuple[Mapping, Mapping]:
  """`(params, state)` of weights in any format `weight_formats` reads: an official-format
  pickle, this package's safetensors, a transformers Perceiver folder, a `Checkpointer`
  directory (its newest step), one of its step directories, or a training workdir."""
  weights = weight_formats.read(path)
  return weights.params, weights.state


def _under(module: str, prefix: str) -> bool:
  """True if `module` is `prefix` or lies below it, comparing whole path components."""
  return module == prefix or module.startswith(prefix.rstrip("/") + "/")


# The output layer of every decoder (`model.DECODERS`) and baseline architecture: the modules
# that fine-tuning on another label set re-initialises. A model holds one of them.
HEAD_MODULES = (
  "classification_decoder/~/basic_decoder/output",
  "projection_decoder/~/logits",
  "convnet/logits",
  "vit/logits",
  "transformer/logits",
  "sentence_decoder/output",  # GLUE; configs/glue.py also excludes the rest of the decoder
)
# The language model's pretraining head: with `exclude_head`, dropped from the file when the
# model being fine-tuned lacks it (a GLUE model starting from an MLM checkpoint).
PRETRAINING_HEADS = ("basic_decoder", "embedding_decoder")


def load_pretrained(
  path: str,
  params_template: hk.Params,
  state_template: hk.State | None = None,
  *,
  exclude: tuple[str, ...] = (),
  exclude_head: bool = False,
) -> tuple[hk.Params, hk.State]:
  """Pretrained params and state for a model, e.g. to fine-tune with a new classifier head.

  Args:
    path: an official-format pickle (`*.pystate`, `*.pickle`, `*.pkl`), this package's
      `*.safetensors`, a transformers Perceiver folder, a `Checkpointer` directory (its
      newest step) or one of its step directories (`directory/<step>`).
    params_template: the model's freshly initialised params (real arrays, not shapes).
    state_template: the model's initialised state; None for a model without state.
    exclude: module path prefixes, e.g. `("perceiver_encoder/~/cross_attention",)`, whose
      entries keep the template's values and may be absent from, or differ in the file. A
      prefix matches whole path components: `self_attention` does not match
      `self_attention_1`. Each must match a module of the model.
    exclude_head: also exclude the model's head: the entry of `HEAD_MODULES` that the
      template holds, whichever decoder or architecture it has; and drop the file's
      `PRETRAINING_HEADS` modules that the template lacks.

  Returns:
    `(params, state)` with the template's modules, leaf names and dtypes: numpy arrays
    from the file, the template's own arrays for excluded modules.

  Raises:
    CheckpointFormatError: the file cannot be read, or an array does not match the
      checksums saved with it.
    CheckpointMismatchError: a non-excluded entry is missing, unexpected or has another shape.
    ValueError: a prefix in `exclude` matches no module of the templates (likely a typo), or
      `exclude_head` is set and the model has none of `HEAD_MODULES`.
  """
  state_template = state_template or {}
  modules = [*params_template, *state_template]
  # Checked before reading: a misspelt prefix would otherwise load the old head silently
  # whenever its shapes happen to fit.
  unused = [p for p in exclude if not any(_under(m, p) for m in modules)]
  if unused:
    raise ValueError(f"exclude prefixes match no module of the model: {unused}")
  if exclude_head:
    heads = [p for p in HEAD_MODULES if any(_under(m, p) for m in modules)]
    if not heads:
      raise ValueError(
        f"the model has none of the known heads {list(HEAD_MODULES)}: name its head in "
        "pretrained.exclude and set pretrained.exclude_head=False"
      )
    unused_heads = [p for p in PRETRAINING_HEADS if not any(_under(m, p) for m in modules)]
    exclude = (*exclude, *heads, *unused_heads)
  params, state = read_weights(path)

  def excluded(module: str) -> bool:
    return any(_under(module, p) for p in exclude)

  def merge(template: Mapping, loaded: Mapping, what: str) -> dict:
    matched = official_format.match_to_template(
      {m: v for m, v in template.items() if not excluded(m)},
      {m: v for m, v in loaded.items() if not excluded(m)},
      what=what,
    )
    return {m: dict(template[m]) if excluded(m) else matched[m] for m in template}

  return merge(params_template, params, "params"), merge(state_template, state, "state")


def load_trained_model(
  workdir: str, model_cfg
) -> tuple[hk.TransformedWithState, hk.Params, hk.State]:
  """(forward, params, state) of a training run's newest checkpoint in `workdir`, for
  `model_cfg` (the run's `config.model`), ready for `forward.apply(..., is_training=False)`."""
  forward = model.build_model(model_cfg)
  template = forward.init(jax.random.PRNGKey(0), model.dummy_inputs(model_cfg), is_training=True)
  params, state = load_pretrained(os.path.join(workdir, "checkpoints"), *template)
  return forward, params, state
