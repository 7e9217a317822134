"""Tests for perceiver_jax/checkpointing.py: orbax train checkpoints and SIGTERM."""

import errno
import functools
import os
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from orbax.checkpoint._src.serialization import type_handlers

from perceiver_jax import checksums
from perceiver_jax import model
from perceiver_jax import registry
from perceiver_jax import train_step
from perceiver_jax.checkpointing import Checkpointer
from perceiver_jax.checkpointing import CheckpointSaveError
from perceiver_jax.checkpointing import PreemptionGuard
from perceiver_jax.official_format import CheckpointFormatError
from perceiver_jax.official_format import CheckpointMismatchError
from perceiver_jax.train_step import TrainState

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_state(value: float) -> TrainState:
  """A small TrainState whose float leaves all equal `value`; also used by the subprocess and
  test_pretrained.py."""
  params = {"net/~/linear": {"w": np.full((2, 3), value, np.float32)}}
  return TrainState(
    step=np.asarray(value, np.int32),
    params=params,
    state={"net/~/batch_norm/~/mean_ema": {"average": np.full((3,), value, np.float32)}},
    opt_state=optax.adam(1.0).init(params),
    rng=np.asarray(jax.random.PRNGKey(int(value))),
  )


@functools.cache  # Initialising the model is most of this file's run time; no test mutates it.
def real_state(num_classes: int = 10, seed: int = 0) -> TrainState:
  """The `testing` model's initial TrainState with a `num_classes` head."""
  cfg = registry.get_model_config("testing")
  cfg.num_classes = num_classes
  forward = model.build_model(cfg)
  rng = jax.random.PRNGKey(seed)
  return train_step.init_train_state(forward, optax.lamb(1e-3), rng, model.dummy_inputs(cfg))


def assert_identical(actual, expected):
  """Same tree, leaf types, dtypes and bits."""
  assert jax.tree.structure(actual) == jax.tree.structure(expected)
  for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
    assert type(a) is type(e) and a.dtype == e.dtype
    np.testing.assert_array_equal(np.asarray(a), np.asarray(e), strict=True)


def _step_dirs(directory):
  return sorted(name for name in os.listdir(directory) if name.isdigit())


# --- Checkpointer ------------------------------------------------------------------------------


def test_round_trip_is_bit_identical(tmp_path):
  saved = real_state(seed=0)._replace(step=jnp.int32(2000))
  saved = saved._replace(params=jax.tree.map(lambda x: x + 0.5, saved.params))
  with Checkpointer(str(tmp_path)) as ckpt:
    assert ckpt.save(2000, saved)
  # A fresh process would build its template from another initialisation.
  with Checkpointer(str(tmp_path)) as ckpt:
    restored = ckpt.restore_latest(real_state(seed=1))
  assert type(restored) is TrainState
  assert_identical(restored, saved)


def test_numpy_template_restores_numpy(tmp_path):
  with Checkpointer(str(tmp_path), save_every_steps=1) as ckpt:
    ckpt.save(3, tiny_state(3.0))
    restored = ckpt.restore_latest(tiny_state(0.0))
  assert_identical(restored, tiny_state(3.0))


def test_keep_only_newest(tmp_path):
  with Checkpointer(str(tmp_path), keep=2, save_every_steps=1) as ckpt:
    for step in range(1, 6):
      assert ckpt.save(step, tiny_state(step))
    assert ckpt.latest_step() == 5
  assert _step_dirs(tmp_path) == ["4", "5"]


def test_save_every_steps_and_force(tmp_path):
  with Checkpointer(str(tmp_path), save_every_steps=10) as ckpt:
    assert not ckpt.save(5, tiny_state(5))
    assert ckpt.save(10, tiny_state(10))
    assert not ckpt.save(13, tiny_state(13))
    assert ckpt.save(13, tiny_state(13), force=True)
    # A preemption save on a step the periodic save just wrote is a no-op, not an error.
    assert not ckpt.save(13, tiny_state(13), force=True)
    assert ckpt.latest_step() == 13
  assert _step_dirs(tmp_path) == ["10", "13"]


def test_no_checkpoint_gives_none(tmp_path):
  with Checkpointer(str(tmp_path / "new")) as ckpt:
    assert ckpt.latest_step() is None
    assert ckpt.restore_latest(tiny_state(0)) is None


_KILLED_SAVE = """
import os, signal, sys
sys.path[:0] = [{repo!r}, {tests!r}]  # This checkout, wherever the package is installed from.
from orbax.checkpoint._src.path import atomicity
from perceiver_jax.checkpointing import Checkpointer
from perceiver_jax.checkpointing import CheckpointSaveError
from test_checkpointing import tiny_state

ckpt = Checkpointer({directory!r}, save_every_steps=1)
ckpt.save(1, tiny_state(1))
async def die(self):  # Every array is written; only the commit (rename) is missing.
  os.kill(os.getpid(), signal.SIGKILL)
atomicity.AtomicRenameTemporaryPath.finalize = die
ckpt.save(2, tiny_state(2))
"""


def test_killed_save_is_ignored(tmp_path):
  script = _KILLED_SAVE.format(
    repo=REPO, tests=os.path.join(REPO, "tests"), directory=str(tmp_path)
  )
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env)
  assert proc.returncode == -signal.SIGKILL
  leftovers = [n for n in os.listdir(tmp_path) if n.startswith("2.orbax-checkpoint-tmp")]
  assert leftovers and _step_dirs(tmp_path) == ["1"]

  with Checkpointer(str(tmp_path), save_every_steps=1) as ckpt:
    assert ckpt.latest_step() == 1
    assert_identical(ckpt.restore_latest(tiny_state(0)), tiny_state(1))
    # The resumed run reaches step 2 again; the leftover must not get in its way.
    assert ckpt.save(2, tiny_state(2))
    assert_identical(ckpt.restore_latest(tiny_state(0)), tiny_state(2))
  assert sorted(os.listdir(tmp_path)) == ["1", "2"]


def _flip_a_bit(step_dir, seed):
  """Flips one random bit of the largest file of an orbax step (its biggest array's data)."""
  files = [os.path.join(root, n) for root, _, names in os.walk(step_dir / "default") for n in names]
  largest = max(files, key=os.path.getsize)
  data = bytearray(open(largest, "rb").read())
  bit = np.random.default_rng(seed).integers(len(data) * 8)
  data[bit // 8] ^= 1 << (bit % 8)
  with open(largest, "wb") as f:
    f.write(data)


def _big_state(value: float) -> TrainState:
  state = tiny_state(value)
  weights = np.random.default_rng(int(value)).standard_normal((64, 256)).astype(np.float32)
  return state._replace(params={"net/~/linear": {"w": weights}})


def _one_warning_line(caplog, text):
  lines = [r.getMessage() for r in caplog.records if text in r.getMessage()]
  assert len(lines) == 1 and "\n" not in lines[0], lines
  return lines[0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_flipped_bit_falls_back_to_the_previous_checkpoint(tmp_path, caplog, seed):
  with Checkpointer(str(tmp_path), save_every_steps=1) as ckpt:
    ckpt.save(1, _big_state(1))
    ckpt.save(2, _big_state(2))
  _flip_a_bit(tmp_path / "2", seed)
  with Checkpointer(str(tmp_path), save_every_steps=1) as ckpt:
    assert_identical(ckpt.restore_latest(_big_state(0)), _big_state(1))
    assert _one_warning_line(caplog, "is damaged") == (
      f"Checkpoint step 2 is damaged: {tmp_path / '2'}: array ['params']['net/~/linear']['w'] "
      "does not match its checksum; trying an older one."
    )
    assert _one_warning_line(caplog, "Restored") == (
      f"Restored step 1 instead of the newer step(s) [2], kept in {tmp_path} as ['2.damaged']."
    )
    # The damaged step is kept aside; the resumed run writes step 2 again.
    assert ckpt.save(2, _big_state(2))
  assert sorted(os.listdir(tmp_path)) == ["1", "2", "2.damaged"]


def test_flipped_bits_in_every_checkpoint_stop_with_one_line(tmp_path):
  with Checkpointer(str(tmp_path), save_every_steps=1) as ckpt:
    ckpt.save(1, _big_state(1))
    ckpt.save(2, _big_state(2))
  _flip_a_bit(tmp_path / "1", 0)
  _flip_a_bit(tmp_path / "2", 0)
  with Checkpointer(str(tmp_path)) as ckpt, pytest.raises(CheckpointFormatError) as e:
    ckpt.restore_latest(_big_state(0))
  assert str(e.value).startswith(f"{tmp_path}: no checkpoint can be restored: {tmp_path / '2'}: ")
  assert "\n" not in str(e.value)
  assert _step_dirs(tmp_path) == ["1", "2"]  # nothing renamed or deleted


def test_unreadable_files_count_as_damage(tmp_path):
  with Checkpointer(str(tmp_path), save_every_steps=1) as ckpt:
    ckpt.save(1, tiny_state(1))
    ckpt.save(2, tiny_state(2))
  for root, _, files in os.walk(tmp_path / "2" / "default"):
    for name in files:
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"garbage")
  with Checkpointer(str(tmp_path)) as ckpt:
    assert_identical(ckpt.restore_latest(tiny_state(0)), tiny_state(1))


def test_steps_without_checksums(tmp_path, caplog):
  """Saved before checksums were stored: restored, with a warning. Killed before its checksums
  were written while an older step has them: the older step is restored."""
  with Checkpointer(str(tmp_path), save_every_steps=1) as ckpt:
    ckpt.save(1, tiny_state(1))
    ckpt.save(2, tiny_state(2))
  os.remove(tmp_path / "2" / checksums.FILE)
  with Checkpointer(str(tmp_path), save_every_steps=1) as ckpt:
    assert_identical(ckpt.restore_latest(tiny_state(0)), tiny_state(1))
  assert sorted(os.listdir(tmp_path)) == ["1", "2.unverified"]
  os.remove(tmp_path / "1" / checksums.FILE)
  with Checkpointer(str(tmp_path), save_every_steps=1) as ckpt:
    assert_identical(ckpt.restore_latest(tiny_state(0)), tiny_state(1))
  assert "restored it unverified" in _one_warning_line(caplog, f"{tmp_path / '1'} has no")


def test_failed_save_ends_in_one_line_and_keeps_older_steps(tmp_path, monkeypatch, caplog):
  with Checkpointer(str(tmp_path), save_every_steps=1) as ckpt:
    ckpt.save(1, tiny_state(1))

    async def full_disk(self, value, tspec, ts_context):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path))

    monkeypatch.setattr(type_handlers.NumpyHandler, "_open_and_write", full_disk)
    with pytest.raises(CheckpointSaveError) as e:
      ckpt.save(2, tiny_state(2))
    monkeypatch.undo()
  assert str(e.value) == (
    f"cannot save the checkpoint of step 2 in {tmp_path}: "
    f"[Errno {errno.ENOSPC}] No space left on device: '{tmp_path}'"
  )
  assert not [r for r in caplog.records if r.exc_info]  # orbax's thread tracebacks
  with Checkpointer(str(tmp_path), save_every_steps=1) as ckpt:
    assert_identical(ckpt.restore_latest(tiny_state(0)), tiny_state(1))
    assert ckpt.save(2, tiny_state(2))
  assert _step_dirs(tmp_path) == ["1", "2"]


def test_failed_checksum_write_leaves_an_unverified_step(tmp_path, monkeypatch):
  def full_disk(step_dir, tree):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  with Checkpointer(str(tmp_path), save_every_steps=1) as ckpt:
    ckpt.save(1, tiny_state(1))
    monkeypatch.setattr(checksums, "write", full_disk)
    with pytest.raises(CheckpointSaveError, match="step 2 .*No space left on device"):
      ckpt.save(2, tiny_state(2))
    monkeypatch.undo()
  with Checkpointer(str(tmp_path), save_every_steps=1) as ckpt:
    assert_identical(ckpt.restore_latest(tiny_state(0)), tiny_state(1))


def test_template_with_other_shape_is_refused(tmp_path):
  with Checkpointer(str(tmp_path), save_every_steps=1) as ckpt:
    ckpt.save(1, tiny_state(1))
    template = tiny_state(0)
    template.params["net/~/linear"]["w"] = np.zeros((2, 4), np.float32)
    with pytest.raises(
      CheckpointMismatchError, match=r"\['net/~/linear'\]\['w'\] is float32\[2, 3\]"
    ):
      ckpt.restore_latest(template)


# --- PreemptionGuard ---------------------------------------------------------------------------


def test_sigterm_sets_flag_and_previous_handler_returns():
  def previous(signum, frame):
    raise AssertionError("the guard should have intercepted SIGTERM")

  original = signal.signal(signal.SIGTERM, previous)
  try:
    with PreemptionGuard() as guard:
      assert not guard.requested
      os.kill(os.getpid(), signal.SIGTERM)
      assert guard.requested
    assert signal.getsignal(signal.SIGTERM) is previous
  finally:
    signal.signal(signal.SIGTERM, original)
