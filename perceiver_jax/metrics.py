"""Training metrics on disk: a JSON-lines log, TensorBoard events, the config, progress lines.

Layout of a workdir:
  workdir/metrics.jsonl   one JSON object per write: {"step": 1200, "train/loss": 2.31, ...}
  workdir/tensorboard/    TensorBoard event files with the same scalars
  workdir/config.json     the run's config
  workdir/final.json      written once the last step is done: the marker of a finished run

`metrics.jsonl` is the source of truth for scripts (`read_metrics`, `final_metrics`, the sweep
tables); TensorBoard is for looking at curves. Non-finite values are written as JSON `null`
(strict JSON has no NaN or Infinity, and other readers reject Python's extensions); the trainer
stops a run on a non-finite loss, so a `null` marks where it went wrong.

Failed writes: everything is written in the caller's thread, so a full disk or any other write
error raises an OSError naming the file at the write that failed, never later and never as a
hang. `metrics.jsonl` then still ends with a whole line; config.json and final.json are
replaced atomically, so they hold the old text or the new one.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import time
from collections.abc import Callable
from collections.abc import Mapping
from typing import TypeVar

import ml_collections
from absl import logging
from tensorboardX import record_writer
from tensorboardX.proto import event_pb2
from tensorboardX.proto import summary_pb2

from perceiver_jax import atomic

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
CONFIG_FILE = "config.json"
FINAL_FILE = "final.json"

T = TypeVar("T")


def _named(error: OSError, path: str) -> OSError:
  """`error` with `path` as its filename, so that its one-line message names the file."""
  if error.filename is not None:
    return error
  return OSError(error.errno, error.strerror or str(error), path)


def atomic_write_text(path: str, text: str) -> None:
  """Writes `text` to `path` so that readers see the old file or the new one, never a mix.

  A failed write (a full disk, say) leaves the old file and raises an OSError naming `path`.
  """
  try:
    with atomic.atomic_write(path, "w") as f:
      f.write(text)
  except OSError as e:
    raise _named(e, path) from e


def _json_number(value) -> float | None:
  value = float(value)  # also takes numpy and JAX scalars
  return value if math.isfinite(value) else None


def _record(step: int, scalars: Mapping[str, float]) -> dict:
  """`{"step": step, **scalars}` as strict-JSON numbers (non-finite values become None)."""
  return {"step": int(step), **{k: _json_number(v) for k, v in scalars.items()}}


def _ends_mid_line(path: str) -> bool:
  """Whether `path` exists and its last byte is not a newline (a write was cut short)."""
  if not os.path.exists(path):
    return False
  with open(path, "rb") as f:
    size = f.seek(0, os.SEEK_END)
    return size > 0 and f.seek(size - 1) >= 0 and f.read(1) != b"\n"


def _append(fd: int, data: bytes) -> None:
  """Appends `data` to the file open as `fd` and fsyncs it; on an error the file is cut back
  to its old length, so that it never ends in part of `data`."""
  start = os.lseek(fd, 0, os.SEEK_END)
  try:
    view = memoryview(data)
    while view:
      view = view[os.write(fd, view) :]
    os.fsync(fd)  # a crash then loses at most the line being written
  except OSError:
    with contextlib.suppress(OSError):  # truncating frees space, so it works on a full disk
      os.ftruncate(fd, start)
    raise


class _EventFile:
  """One TensorBoard event file, written in the caller's thread: `write` returns once the
  events are on disk, or raises the write's OSError."""

  def __init__(self, path: str, purge_step: int | None):
    self._records = record_writer.RecordWriter(path)
    events = [event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2")]
    if purge_step is not None:
      # TensorBoard hides the events of steps >= purge_step that earlier files hold.
      start = event_pb2.SessionLog(status=event_pb2.SessionLog.START)
      events.append(event_pb2.Event(wall_time=time.time(), step=purge_step, session_log=start))
    self.write(events)

  def write(self, events: list[event_pb2.Event]) -> None:
    for event in events:
      self._records.write(event.SerializeToString())
    self._records.flush()  # flush and fsync

  def close(self) -> None:
    self._records.close()


def _new_event_path(directory: str) -> str:
  """A new `events.out.tfevents.<seconds>.<host>[.n]` in `directory` (TensorBoard reads every
  file whose name holds "tfevents", in name order)."""
  os.makedirs(directory, exist_ok=True)
  base = os.path.join(
    directory, f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}"
  )
  path, n = base, 0
  while os.path.exists(path):
    n += 1
    path = f"{base}.{n}"
  return path


class MetricWriter:
  """Appends scalars to `workdir/metrics.jsonl` and to TensorBoard events in `workdir/tensorboard/`.

  Every write is done, and fsynced, in the caller's thread before the method returns, so a
  failed write (a full disk, say) raises there and then: an OSError whose message names the
  file. After a failure `metrics.jsonl` still ends with a whole line, every later write raises
  the same error again, and `close` only releases the files (it never raises).

  In multi-host runs only process 0 writes: pass `enabled=jax.process_index() == 0`; a disabled
  writer creates nothing and all its methods do nothing.
  """

  def __init__(self, workdir: str, *, enabled: bool = True):
    self._enabled = enabled
    if not enabled:
      return
    self._path = os.path.join(workdir, METRICS_FILE)
    self._tb_dir = os.path.join(workdir, TENSORBOARD_DIR)
    self._failure: OSError | None = None
    self._fd = self._events = None
    self._guarded(workdir, lambda: os.makedirs(workdir, exist_ok=True))
    # A crash mid-write leaves a partial last line; appending after it would glue the next record
    # onto it, so drop it first.
    if self._guarded(self._path, lambda: _ends_mid_line(self._path)):
      self._rewrite(read_metrics(self._path))
    self._open(purge_step=None)

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    """Appends one line `{"step": step, **scalars}` and logs the scalars to TensorBoard."""
    if not self._enabled:
      return
    line = json.dumps(_record(step, scalars), allow_nan=False) + "\n"
    self._guarded(self._path, lambda: _append(self._fd, line.encode()))
    values = [summary_pb2.Summary.Value(tag=k, simple_value=float(v)) for k, v in scalars.items()]
    summary = summary_pb2.Summary(value=values)
    event = event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary)
    self._guarded(self._events_path, lambda: self._events.write([event]))  # NaN plots as NaN

  def truncate_after(self, step: int) -> None:
    """Keeps only the records with `record["step"] <= step`; call it when resuming from `step`.

    Rewrites `metrics.jsonl` atomically and starts a new TensorBoard event file that asks
    TensorBoard to hide the events of steps > `step` (the resumed run writes them again).
    """
    if not self._enabled:
      return
    self._release()
    self._rewrite([r for r in read_metrics(self._path) if r["step"] <= step])
    self._open(purge_step=step + 1)

  def close(self) -> None:
    """Closes the files (everything written is already on disk); never raises."""
    if self._enabled:
      self._release()

  def _open(self, purge_step: int | None) -> None:
    self._fd = self._guarded(
      self._path, lambda: os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    )
    self._events_path = self._guarded(self._tb_dir, lambda: _new_event_path(self._tb_dir))
    self._events = self._guarded(
      self._events_path, lambda: _EventFile(self._events_path, purge_step)
    )

  def _guarded(self, path: str, operation: Callable[[], T]) -> T:
    """`operation()`; an OSError from it (or from an earlier write) is raised naming `path`
    (or the earlier file), and the writer is spent."""
    if self._failure is not None:
      raise self._failure
    try:
      return operation()
    except OSError as e:
      self._failure = _named(e, path)
      self._release()
      raise self._failure from e

  def _release(self) -> None:
    if self._fd is not None:
      with contextlib.suppress(OSError):
        os.close(self._fd)
    if self._events is not None:
      with contextlib.suppress(OSError):
        self._events.close()
    self._fd = self._events = None

  def _rewrite(self, records: list[dict]) -> None:
    text = "".join(json.dumps(r, allow_nan=False) + "\n" for r in records)
    self._guarded(self._path, lambda: atomic_write_text(self._path, text))


def read_metrics(path: str) -> list[dict]:
  """All records of a `metrics.jsonl`, in file order.

  A last line that does not parse is skipped: it is what a crash during a write leaves. A bad
  line anywhere else raises ValueError naming the file and the line.
  """
  with open(path) as f:
    lines = f.read().splitlines()
  records = []
  for number, line in enumerate(lines, start=1):
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError:
      if number == len(lines):
        break
      raise ValueError(f"{path}:{number}: not a JSON object: {line[:80]!r}") from None
  return records


def final_metrics(path: str) -> dict:
  """The last value of every key in a `metrics.jsonl` (including `step`, the last step)."""
  final = {}
  for record in read_metrics(path):
    final.update(record)
  return final


def write_final(workdir: str, step: int, scalars: Mapping[str, float], **extra) -> None:
  """Writes `workdir/final.json` atomically: the last step, its final metrics, and `extra`.

  Its presence is what marks a run as finished (for sweeps and scripts); the trainer deletes it
  when a run is resumed or extended past it.
  """
  record = {**_record(step, scalars), **extra}
  atomic_write_text(os.path.join(workdir, FINAL_FILE), json.dumps(record, indent=2) + "\n")


def read_final(workdir: str) -> dict | None:
  """`workdir/final.json` as a dict, or None if the run has not finished."""
  path = os.path.join(workdir, FINAL_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def write_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Writes `workdir/config.json` atomically (tuples become lists)."""
  os.makedirs(workdir, exist_ok=True)
  atomic_write_text(os.path.join(workdir, CONFIG_FILE), config.to_json_best_effort(indent=2) + "\n")


def _tuples(value):
  """JSON lists back to the tuples a config declares (nested ones too)."""
  return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def apply_json(config: ml_collections.ConfigDict, values: dict, prefix: str, base: str) -> None:
  """Sets `config`'s fields from parsed JSON `values` (lists back to tuples where the config
  declares tuples); ValueError, one line, for a field `base` does not have."""
  for key, value in values.items():
    name = f"{prefix}{key}"
    if key not in config:
      raise ValueError(f"{name}={value!r} in config.json: not a field of {base}")
    default = config[key]
    if isinstance(default, ml_collections.ConfigDict):
      if not isinstance(value, dict):
        raise ValueError(f"{name}={value!r} in config.json: expected a section")
      apply_json(default, value, f"{name}.", base)
    elif isinstance(default, tuple):
      config[key] = _tuples(value)
    else:
      config[key] = value


def read_config(
  workdir: str, config: ml_collections.ConfigDict, base: str
) -> ml_collections.ConfigDict:
  """A run's config: `config` (the experiment's, named `base` in errors, e.g.
  'configs/flow.py:mini') with WORKDIR/config.json applied on top, in place.

  Raises:
    ValueError: one line, if config.json is missing or holds a field the config lacks.
  """
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise ValueError(f"--workdir={workdir!r}: no {CONFIG_FILE}; not a training workdir")
  with open(path) as f:
    values = json.load(f)
  apply_json(config, values, "", base)
  return config


def format_duration(seconds: float) -> str:
  """`45s`, `6m30s`, `2h05m`: compact and precise enough for an ETA."""
  seconds = round(seconds)
  if seconds < 60:
    return f"{seconds}s"
  if seconds < 3600:
    return f"{seconds // 60}m{seconds % 60:02d}s"
  return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class ProgressLogger:
  """Logs progress, throughput and ETA every `every_seconds` of wall time, and at the last step.

  Rates are measured over the interval since the previous log line, so they follow changes in
  speed. Construct it (or pass `start_step`) after the first, compiling step, so that compile
  time does not count as training time.
  """

  def __init__(
    self,
    total_steps: int,
    *,
    every_seconds: float = 30.0,
    start_step: int = 0,
    log_fn: Callable[[str], object] = logging.info,
    clock: Callable[[], float] = time.monotonic,
  ):
    self._total_steps = total_steps
    self._every_seconds = every_seconds
    self._log_fn = log_fn
    self._clock = clock
    self._last_step = start_step
    self._last_time = clock()

  def update(self, step: int, examples_per_step: int) -> dict[str, float] | None:
    """Call after each step; returns the interval's rates when it logs a line, else None."""
    now = self._clock()
    elapsed = now - self._last_time
    if elapsed < self._every_seconds and step < self._total_steps:
      return None
    if step <= self._last_step or elapsed <= 0:
      return None  # nothing measured since the last line (e.g. the last step reported twice)
    steps_per_sec = (step - self._last_step) / elapsed
    examples_per_sec = steps_per_sec * examples_per_step
    eta = max(self._total_steps - step, 0) / steps_per_sec
    self._log_fn(
      f"step {step}/{self._total_steps} ({100 * step / self._total_steps:.1f}%)  "
      f"{steps_per_sec:.1f} steps/s  {examples_per_sec:.0f} examples/s  "
      f"ETA {format_duration(eta)}"
    )
    self._last_step, self._last_time = step, now
    return {"train/steps_per_sec": steps_per_sec, "train/examples_per_sec": examples_per_sec}
