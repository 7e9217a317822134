"""Training checkpoints (orbax) and preemption handling; `pretrained.py` loads their weights
into another model.

Layout written by `Checkpointer(directory)`: one sub-directory per step, `directory/<step>/`,
holding the `TrainState` fields as a dict (`step`, `params`, `state`, `opt_state`, `rng`) and
`checksums.json`, the sha256 of every array leaf's bytes.

Atomicity: orbax writes each step into `directory/<step>.orbax-checkpoint-tmp/` and, once every
array is written, renames it to `directory/<step>/` (a rename within one filesystem is atomic).
Orbax lists only finalised step directories, so a save killed midway leaves a `*-tmp`
directory that `latest_step`/`restore_latest` never see; the next `Checkpointer` on the
directory deletes it (in the background, finished before its first save). `checksums.json` is
written (atomically) after orbax has finished: a step counts as verified only once it is there.

Verification: `restore_latest` checks every restored array against its checksum. A damaged
step (an array that does not match, a file orbax cannot read) is reported in one warning line
and the next older step is tried; the damaged and skipped newer steps are renamed
`<step>.damaged` / `<step>.unverified` (kept for inspection, out of orbax's way). A step without
`checksums.json` (saved before checksums were stored, or killed between the orbax commit and the
checksums) is used only when no step verifies, with a warning that it is unverified. If no step
can be restored, `CheckpointFormatError` says so in one line.
"""

from __future__ import annotations

import contextlib
import logging as std_logging
import os
import signal
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from perceiver_jax import checksums
from perceiver_jax.official_format import CheckpointFormatError
from perceiver_jax.official_format import CheckpointMismatchError
from perceiver_jax.train_step import TrainState


class CheckpointSaveError(OSError):
  """A checkpoint could not be written; the message names the step, the directory and why."""


def _first_line(error: BaseException) -> str:
  text = str(error).strip()
  return text.splitlines()[0] if text else type(error).__name__


class _DropOrbaxTracebacks(std_logging.Filter):
  def filter(self, record: std_logging.LogRecord) -> bool:
    return not (record.exc_info and f"{os.sep}orbax{os.sep}" in record.pathname)


@contextlib.contextmanager
def _failures_reported_once():
  """While orbax saves: a failing write thread's traceback is not logged (the error reaches
  `save`, which reports it in one line), and neither is asyncio's "Event loop is closed" that
  tensorstore callbacks outliving orbax's event loop raise after such a failure."""
  absl_logger = std_logging.getLogger("absl")
  log_filter = _DropOrbaxTracebacks()
  previous_hook = sys.unraisablehook

  def hook(unraisable) -> None:
    error = unraisable.exc_value
    if not (isinstance(error, RuntimeError) and str(error) == "Event loop is closed"):
      previous_hook(unraisable)

  absl_logger.addFilter(log_filter)
  sys.unraisablehook = hook
  try:
    yield
  finally:
    sys.unraisablehook = previous_hook
    absl_logger.removeFilter(log_filter)


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

    Raises:
      CheckpointSaveError: the write failed (e.g. a full disk); one line naming the step, the
        directory and the cause. The older checkpoints are untouched; the partial step is
        either an orbax `*-tmp` directory or a step without checksums, and is never restored
        in place of a verified one.
    """
    if step in self._manager.all_steps():
      return False
    tree = state._asdict()
    try:
      with _failures_reported_once():
        if not self._manager.save(step, args=ocp.args.StandardSave(tree), force=force):
          return False
      if jax.process_index() == 0:  # the other processes share the directory
        checksums.write(self._step_dir(step), tree)
    except Exception as e:  # a full disk surfaces as ValueError, OSError, ... from orbax
      raise CheckpointSaveError(
        f"cannot save the checkpoint of step {step} in {self.directory}: {_first_line(e)}"
      ) from e
    return True

  def latest_step(self) -> int | None:
    """The newest step orbax has committed (verified or not), or None if there is none."""
    return self._manager.latest_step()

  def _step_dir(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def _restore(self, step: int, template: TrainState) -> TrainState:
    """Step `step` in the structure of `template`, checked against its checksums if it has
    them. CheckpointFormatError if it is damaged, CheckpointMismatchError if it does not fit
    `template`."""
    where = self._step_dir(step)
    sums = checksums.read(where)
    try:
      restored = self._manager.restore(step, args=ocp.args.StandardRestore(template._asdict()))
    except Exception as e:  # Damaged files surface as many exception types.
      raise CheckpointFormatError(f"{where}: cannot restore: {_first_line(e)}") from e
    restored = type(template)(**restored)
    # Orbax returns a numpy leaf with its stored shape whatever the template says.
    for (key, want), got in zip(
      jax.tree_util.tree_leaves_with_path(template), jax.tree.leaves(restored), strict=True
    ):
      if np.shape(got) != np.shape(want) or got.dtype != want.dtype:
        raise CheckpointMismatchError(
          f"{where}: {jax.tree_util.keystr(key)} is {got.dtype}{list(np.shape(got))}, "
          f"the template expects {want.dtype}{list(np.shape(want))}"
        )
    if sums is not None:
      checksums.verify(where, restored._asdict(), sums)
    return restored

  def _set_aside(self, steps: list[int], verified: set[int]) -> list[str]:
    """Renames `steps` to `<step>.damaged` or `<step>.unverified`, out of orbax's listing (a
    resumed run saves those steps again, and `keep` must not count them); the new names."""
    names = [f"{s}.damaged" if s in verified else f"{s}.unverified" for s in steps]
    if jax.process_index() == 0:
      for step, name in zip(steps, names, strict=True):
        os.replace(self._step_dir(step), os.path.join(self.directory, name))
    self._manager.reload()
    return names

  def restore_latest(self, template: TrainState) -> TrainState | None:
    """The newest checkpoint that verifies, in the structure, shapes and dtypes of `template`.

    Steps are tried newest first: those with checksums, then (only if none of them restores)
    those without. Each damaged step is reported in one warning line; falling back to an older
    step is reported in one more, and the newer steps are set aside (see the module doc).

    Args:
      template: a TrainState of arrays, e.g. a freshly initialised one; numpy leaves come
        back as numpy arrays, jax leaves as jax arrays placed like the template's.

    Returns:
      The restored TrainState, or None if the directory holds no committed checkpoint.

    Raises:
      CheckpointFormatError: no step can be restored (one line naming the directory and the
        newest step's problem).
      CheckpointMismatchError: a step has other shapes or dtypes than `template` (another
        model).
    """
    steps = sorted(self._manager.all_steps(), reverse=True)
    if not steps:
      return None
    verified = {s for s in steps if checksums.exists(self._step_dir(s))}
    problems = []
    for step in sorted(steps, key=lambda s: (s not in verified, -s)):
      try:
        restored = self._restore(step, template)
      except CheckpointFormatError as e:
        logging.warning("Checkpoint step %d is damaged: %s; trying an older one.", step, e)
        problems.append(str(e))
        continue
      if step not in verified:
        logging.warning(
          "%s has no %s (saved before checksums were stored, or its save was cut short): "
          "restored it unverified.",
          self._step_dir(step),
          checksums.FILE,
        )
      newer = [s for s in steps if s > step]
      if newer:
        aside = self._set_aside(newer, verified)
        logging.warning(
          "Restored step %d instead of the newer step(s) %s, kept in %s as %s.",
          step,
          newer,
          self.directory,
          aside,
        )
      return restored
    raise CheckpointFormatError(f"{self.directory}: no checkpoint can be restored: {problems[0]}")

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
