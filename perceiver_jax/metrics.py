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
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from collections.abc import Mapping

import ml_collections
import tensorboardX
from absl import logging

from perceiver_jax import atomic

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
CONFIG_FILE = "config.json"
FINAL_FILE = "final.json"


def atomic_write_text(path: str, text: str) -> None:
  """Writes `text` to `path` so that readers see the old file or the new one, never a mix."""
  with atomic.atomic_write(path, "w") as f:
    f.write(text)


def _json_number(value) -> float | None:
  value = float(value)  # also takes numpy and JAX scalars
  return value if math.isfinite(value) else None


def _record(step: int, scalars: Mapping[str, float]) -> dict:
  """`{"step": step, **scalars}` as strict-JSON numbers (non-finite values become None)."""
  return {"step": int(step), **{k: _json_number(v) for k, v in scalars.items()}}


class MetricWriter:
  """Appends scalars to `workdir/metrics.jsonl` and to TensorBoard events in `workdir/tensorboard/`.

  In multi-host runs only process 0 writes: pass `enabled=jax.process_index() == 0`; a disabled
  writer creates nothing and all its methods do nothing.
  """

  def __init__(self, workdir: str, *, enabled: bool = True):
    self._enabled = enabled
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    self._path = os.path.join(workdir, METRICS_FILE)
    self._tb_dir = os.path.join(workdir, TENSORBOARD_DIR)
    # A crash mid-write leaves a partial last line; appending after it would glue the next record
    # onto it, so drop it first.
    if os.path.exists(self._path):
      with open(self._path, "rb") as f:
        data = f.read()
      if data and not data.endswith(b"\n"):
        self._rewrite(read_metrics(self._path))
    self._file = open(self._path, "a")
    self._tb = self._tensorboard_writer()

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    """Appends one line `{"step": step, **scalars}` and logs the scalars to TensorBoard."""
    if not self._enabled:
      return
    self._file.write(json.dumps(_record(step, scalars), allow_nan=False) + "\n")
    self._file.flush()
    os.fsync(self._file.fileno())  # a crash then loses at most the line being written
    for key, value in scalars.items():
      self._tb.add_scalar(key, float(value), int(step))  # TensorBoard plots NaN itself

  def truncate_after(self, step: int) -> None:
    """Keeps only the records with `record["step"] <= step`; call it when resuming from `step`.

    Rewrites `metrics.jsonl` atomically and restarts the TensorBoard writer with
    `purge_step=step + 1`, so TensorBoard hides the events the resumed run will write again.
    """
    if not self._enabled:
      return
    self._file.close()
    self._rewrite([r for r in read_metrics(self._path) if r["step"] <= step])
    self._file = open(self._path, "a")
    self._tb.close()
    self._tb = self._tensorboard_writer(purge_step=step + 1)

  def close(self) -> None:
    """Closes the log and writes out the TensorBoard events still queued."""
    if not self._enabled:
      return
    self._file.close()
    self._tb.close()

  def _tensorboard_writer(self, purge_step: int | None = None) -> tensorboardX.SummaryWriter:
    # tensorboardX writes events from a background thread that flushes every `flush_secs`
    # (its flush() does not wait for that thread); 10 s keeps the curves near live.
    return tensorboardX.SummaryWriter(self._tb_dir, purge_step=purge_step, flush_secs=10)

  def _rewrite(self, records: list[dict]) -> None:
    atomic_write_text(self._path, "".join(json.dumps(r, allow_nan=False) + "\n" for r in records))


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
