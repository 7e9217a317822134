"""Training checkpoints (orbax), preemption handling and loading pretrained weights.

Layout written by `Checkpointer(directory)`: one sub-directory per step, `directory/<step>/`,
holding the `TrainState` fields as a dict (`step`, `params`, `state`, `opt_state`, `rng`).

Atomicity: orbax writes each step into `directory/<step>.orbax-checkpoint-tmp/` and, once every
array is written, renames it to `directory/<step>/` (a rename within one filesystem is atomic).
Orbax lists only finalised step directories, so a save killed midway leaves a `*-tmp`
directory that `latest_step`/`restore_latest` never see; the next `Checkpointer` on the
directory deletes it (in the background, finished before its first save). A finalised step
that fails to restore (files deleted or damaged after the fact) raises `CheckpointFormatError`
naming it instead of silently falling back to an older step, since that would hide a storage
problem and quietly repeat training.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping

import haiku as hk
import jax
import numpy as np
import orbax.checkpoint as ocp

from perceiver_jax import official_format
from perceiver_jax.official_format import CheckpointFormatError
from perceiver_jax.train_step import TrainState


class Checkpointer:
  """Saves `TrainState`s every `save_every_steps` steps and keeps the newest `keep` of them.

  Args:
    directory: where the step directories live; created if missing.
    keep: how many of the newest checkpoints to keep; older ones are deleted after a save.
    save_every_steps: `save` writes only steps that are multiples of this, unless forced.
  """

  def __init__(self, directory: str, *, keep: int = 3, save_every_steps: int = 1000):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(
      max_to_keep=keep,
      # Only multiples of `save_every_steps`: orbax's default policy would also save any step
      # into an empty directory, e.g. step 1 of every fresh run.
      save_decision_policy=ocp.checkpoint_managers.FixedIntervalPolicy(save_every_steps),
      # Synchronous, so that when `save` returns the step is committed on disk: a preempted
      # job must not exit while its last save is still being written in the background.
      enable_async_checkpointing=False,
      # Removes `*.orbax-checkpoint-tmp` directories left by a save that was killed.
      cleanup_tmp_directories=True,
    )
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def save(self, step: int, state: TrainState, *, force: bool = False) -> bool:
    """Writes `state` as `step` if `step` is a multiple of `save_every_steps` or `force`.

    Args:
      step: the training step; names the checkpoint.
      state: host-side, unreplicated (no leading device axis) TrainState of arrays.
      force: save regardless of `save_every_steps`, e.g. on preemption or at the end.

    Returns:
      True if this call wrote a checkpoint. False if the step was skipped, or already saved:
      a forced save on preemption often lands on a step the periodic save just wrote.
    """
    if step in self._manager.all_steps():
      return False
    return self._manager.save(step, args=ocp.args.StandardSave(state._asdict()), force=force)

  def latest_step(self) -> int | None:
    """The newest complete (committed) step, or None if there is none."""
    return self._manager.latest_step()

  def restore_latest(self, template: TrainState) -> TrainState | None:
    """The newest complete checkpoint in the structure, shapes and dtypes of `template`.

    Args:
      template: a TrainState of arrays, e.g. a freshly initialised one; numpy leaves come
        back as numpy arrays, jax leaves as jax arrays placed like the template's.

    Returns:
      The restored TrainState, or None if the directory holds no complete checkpoint.

    Raises:
      CheckpointFormatError: the newest step cannot be read into `template` (damaged files,
        or a different structure or shape); the message names its directory.
    """
    step = self.latest_step()
    if step is None:
      return None
    where = os.path.join(self.directory, str(step))
    try:
      restored = self._manager.restore(step, args=ocp.args.StandardRestore(template._asdict()))
    except Exception as e:  # Damaged files surface as many exception types.
      reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      raise CheckpointFormatError(f"{where}: cannot restore into the template: {reason}") from e
    restored = type(template)(**restored)
    # Orbax returns a numpy leaf with its stored shape whatever the template says.
    for (key, want), got in zip(
      jax.tree_util.tree_leaves_with_path(template), jax.tree.leaves(restored), strict=True
    ):
      if np.shape(got) != np.shape(want) or got.dtype != want.dtype:
        raise CheckpointFormatError(
          f"{where}: {jax.tree_util.keystr(key)} is {got.dtype}{list(np.shape(got))}, "
          f"the template expects {want.dtype}{list(np.shape(want))}"
        )
    return restored

  def close(self) -> None:
    """Waits for any pending work and releases orbax's resources."""
    self._manager.wait_until_finished()
    self._manager.close()

  def __enter__(self) -> Checkpointer:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


class PreemptionGuard:
  """Turns SIGTERM (the scheduler's preemption notice) into a flag the trainer polls.

  The handler only sets the flag: saving inside a signal handler could interrupt a half-done
  step or a save in progress. The intended loop::

    with PreemptionGuard() as guard:
      for step in ...:
        state = train_step(state, batch)
        checkpointer.save(step, state, force=guard.requested)
        if guard.requested:
          return state

  After the forced save the trainer returns normally, so the process exits with code 0; a
  scheduler that requeues preempted jobs (SLURM `--requeue`, TPU/GKE preemption) restarts it
  and `restore_latest` resumes from the saved step. Schedulers that read exit code 0 as "job
  finished" need the caller to exit with a non-zero code when `requested` is set.

  Must be created on the main thread (a Python restriction on `signal.signal`).
  """

  def __init__(self):
    self._requested = False
    self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame) -> None:
    del signum, frame
    self._requested = True

  @property
  def requested(self) -> bool:
    """True once SIGTERM has arrived."""
    return self._requested

  def close(self) -> None:
    """Reinstalls the SIGTERM handler that was active before this guard."""
    signal.signal(signal.SIGTERM, self._previous)

  def __enter__(self) -> PreemptionGuard:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


def _open_read_only(directory: str) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(read_only=True))


def _read_orbax(path: str) -> tuple[Mapping, Mapping]:
  """`(params, state)` of a `Checkpointer` directory's newest step, or of `directory/<step>`."""
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
  if not isinstance(content, Mapping) or "params" not in content:
    raise CheckpointFormatError(f"{directory}/{step}: not a TrainState checkpoint")
  return content["params"], content.get("state") or {}


def _under(module: str, prefix: str) -> bool:
  """True if `module` is `prefix` or lies below it, comparing whole path components."""
  return module == prefix or module.startswith(prefix.rstrip("/") + "/")


def load_pretrained(
  path: str,
  params_template: hk.Params,
  state_template: hk.State | None = None,
  *,
  exclude: tuple[str, ...] = (),
) -> tuple[hk.Params, hk.State]:
  """Pretrained params and state for a model, e.g. to fine-tune with a new classifier head.

  Args:
    path: an official-format pickle (`*.pystate`, `*.pickle`, `*.pkl`), a `Checkpointer`
      directory (its newest step) or one of its step directories (`directory/<step>`).
    params_template: the model's freshly initialised params (real arrays, not shapes).
    state_template: the model's initialised state; None for a model without state.
    exclude: module path prefixes, e.g. `("classification_decoder/~/basic_decoder/output",)`,
      whose entries keep the template's values and may be absent from, or differ in the
      file. A prefix matches whole path components: `self_attention` does not match
      `self_attention_1`.

  Returns:
    `(params, state)` with the template's modules, leaf names and dtypes: numpy arrays
    from the file, the template's own arrays for excluded modules.

  Raises:
    CheckpointFormatError: the file cannot be read.
    CheckpointMismatchError: a non-excluded entry is missing, unexpected or has another shape.
    ValueError: a prefix in `exclude` matches no module of the templates (likely a typo).
  """
  state_template = state_template or {}
  # Checked before reading: a misspelt prefix would otherwise load the old head silently
  # whenever its shapes happen to fit.
  unused = [
    p for p in exclude if not any(_under(m, p) for m in [*params_template, *state_template])
  ]
  if unused:
    raise ValueError(f"exclude prefixes match no module of the model: {unused}")
  if os.path.isdir(path):
    params, state = _read_orbax(path)
  else:
    params, state = official_format.load_official_pickle(path)

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
  from perceiver_jax import model  # noqa: PLC0415 (model does not import this module)

  forward = model.build_model(model_cfg)
  template = forward.init(jax.random.PRNGKey(0), model.dummy_inputs(model_cfg), is_training=True)
  params, state = load_pretrained(os.path.join(workdir, "checkpoints"), *template)
  return forward, params, state
