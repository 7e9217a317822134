"""Tests of `perceiver_jax/metrics.py`: the JSON-lines log, TensorBoard events, config, progress."""

import errno
import glob
import json
import math
import os
import pathlib
import struct
import subprocess
import sys

import ml_collections
import numpy as np
import pytest
from tensorboardX.proto import event_pb2

from perceiver_jax import metrics

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def read_lines(workdir) -> list[str]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return f.read().splitlines()


def read_events(workdir) -> list[event_pb2.Event]:
  """Decodes every TensorBoard event file under `workdir/tensorboard` (TFRecord framing)."""
  events = []
  for path in sorted(glob.glob(os.path.join(workdir, "tensorboard", "events.out.tfevents.*"))):
    with open(path, "rb") as f:
      data = f.read()
    offset = 0
    while offset < len(data):
      # Record: uint64 length, uint32 CRC of the length, payload, uint32 CRC of the payload.
      (length,) = struct.unpack("<Q", data[offset : offset + 8])
      events.append(event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length]))
      offset += 12 + length + 4
  return events


def scalar_events(workdir) -> list[tuple[int, str, float]]:
  return [(e.step, v.tag, v.simple_value) for e in read_events(workdir) for v in e.summary.value]


def test_jsonl_lines_and_keys(tmp_path):
  writer = metrics.MetricWriter(str(tmp_path))
  writer.write_scalars(10, {"train/loss": 2.5, "train/accuracy": np.float32(0.25)})
  writer.write_scalars(20, {"eval/top1": 0.5})
  writer.close()
  lines = read_lines(tmp_path)
  assert [json.loads(line) for line in lines] == [
    {"step": 10, "train/loss": 2.5, "train/accuracy": 0.25},
    {"step": 20, "eval/top1": 0.5},
  ]
  assert list(json.loads(lines[0])) == ["step", "train/loss", "train/accuracy"]
  assert metrics.final_metrics(str(tmp_path / "metrics.jsonl")) == {
    "step": 20,
    "train/loss": 2.5,
    "train/accuracy": 0.25,
    "eval/top1": 0.5,
  }


def test_non_finite_values_are_null(tmp_path):
  writer = metrics.MetricWriter(str(tmp_path))
  writer.write_scalars(1, {"train/loss": float("nan"), "train/grad_norm": math.inf})
  writer.close()
  (line,) = read_lines(tmp_path)
  # Strict JSON: a NaN or Infinity token would make this raise.
  record = json.loads(line, parse_constant=lambda token: pytest.fail(f"non-JSON token {token}"))
  assert record == {"step": 1, "train/loss": None, "train/grad_norm": None}


def test_truncated_last_line_is_skipped_and_repaired(tmp_path):
  writer = metrics.MetricWriter(str(tmp_path))
  writer.write_scalars(1, {"train/loss": 3.0})
  writer.write_scalars(2, {"train/loss": 2.0})
  writer.close()
  path = str(tmp_path / "metrics.jsonl")
  with open(path, "a") as f:
    f.write('{"step": 3, "train/lo')  # a crash in the middle of a write
  assert [r["step"] for r in metrics.read_metrics(path)] == [1, 2]
  assert metrics.final_metrics(path) == {"step": 2, "train/loss": 2.0}

  # A resumed writer drops the partial line instead of appending to it.
  writer = metrics.MetricWriter(str(tmp_path))
  writer.write_scalars(3, {"train/loss": 1.0})
  writer.close()
  assert [json.loads(line)["step"] for line in read_lines(tmp_path)] == [1, 2, 3]


def test_bad_line_in_the_middle_raises(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"step": 1}\n{"step": 2,\n{"step": 3}\n')
  with pytest.raises(ValueError, match="metrics.jsonl:2"):
    metrics.read_metrics(str(path))


def test_truncate_after(tmp_path):
  writer = metrics.MetricWriter(str(tmp_path))
  for step in range(1, 6):
    writer.write_scalars(step, {"train/loss": 10.0 - step})
  writer.truncate_after(3)
  assert [json.loads(line)["step"] for line in read_lines(tmp_path)] == [1, 2, 3]
  writer.write_scalars(4, {"train/loss": 0.5})  # the resumed run
  writer.close()
  records = metrics.read_metrics(str(tmp_path / "metrics.jsonl"))
  assert [(r["step"], r["train/loss"]) for r in records] == [(1, 9.0), (2, 8.0), (3, 7.0), (4, 0.5)]
  assert sorted(os.listdir(tmp_path)) == ["metrics.jsonl", "tensorboard"]  # no temporary files
  # The restarted TensorBoard writer asks TensorBoard to hide the old steps >= 4.
  starts = [e for e in read_events(tmp_path) if e.HasField("session_log")]
  assert [(e.step, e.session_log.status) for e in starts] == [(4, event_pb2.SessionLog.START)]


def test_tensorboard_event_file_holds_the_scalars(tmp_path):
  writer = metrics.MetricWriter(str(tmp_path))
  writer.write_scalars(7, {"train/loss": 1.25})
  writer.write_scalars(8, {"eval/top1": 0.75})
  writer.close()
  assert scalar_events(tmp_path) == [(7, "train/loss", 1.25), (8, "eval/top1", 0.75)]


def test_disabled_writer_creates_nothing(tmp_path):
  workdir = tmp_path / "run"
  writer = metrics.MetricWriter(str(workdir), enabled=False)
  writer.write_scalars(1, {"train/loss": 1.0})
  writer.truncate_after(0)
  writer.close()
  assert not workdir.exists()


def test_write_config_round_trip(tmp_path):
  config = ml_collections.ConfigDict()
  config.seed = 3
  config.model = ml_collections.ConfigDict({"num_latents": 64, "image_shape": (32, 32)})
  config.optimizer = ml_collections.ConfigDict({"learning_rate": 1e-3, "name": "lamb"})
  metrics.write_config(str(tmp_path), config)
  with open(tmp_path / "config.json") as f:
    loaded = json.load(f)
  assert loaded == {
    "seed": 3,
    "model": {"num_latents": 64, "image_shape": [32, 32]},
    "optimizer": {"learning_rate": 1e-3, "name": "lamb"},
  }
  assert ml_collections.ConfigDict(loaded).optimizer.learning_rate == 1e-3
  assert os.listdir(tmp_path) == ["config.json"]


def _is_open_on(fd: int, suffix: str) -> bool:
  return os.readlink(f"/proc/self/fd/{fd}").endswith(suffix)


@pytest.mark.parametrize("call", ["write", "fsync"])
def test_a_full_disk_during_a_metrics_write_raises_naming_the_file(tmp_path, monkeypatch, call):
  writer = metrics.MetricWriter(str(tmp_path))
  writer.write_scalars(1, {"train/loss": 2.0})
  real_write, real_fsync = os.write, os.fsync

  def full_write(fd, data):  # the disk fills in the middle of the line
    if not _is_open_on(fd, "metrics.jsonl"):
      return real_write(fd, data)
    if len(data) > 5:
      return real_write(fd, bytes(data[:5]))
    raise ENOSPC

  def full_fsync(fd):  # the written line cannot be made durable
    if _is_open_on(fd, "metrics.jsonl"):
      raise ENOSPC
    real_fsync(fd)

  monkeypatch.setattr(os, call, full_write if call == "write" else full_fsync)
  path = str(tmp_path / "metrics.jsonl")
  with pytest.raises(OSError) as info:
    writer.write_scalars(2, {"train/loss": 1.0})
  assert str(info.value) == f"[Errno {errno.ENOSPC}] No space left on device: '{path}'"
  with pytest.raises(OSError) as again:  # a spent writer refuses, it does not half-write
    writer.write_scalars(3, {"train/loss": 0.5})
  assert again.value is info.value
  writer.close()  # never raises: the error above is the one to report
  monkeypatch.undo()
  assert read_lines(tmp_path) == ['{"step": 1, "train/loss": 2.0}']  # the partial line is gone


_FULL_DISK_FOR_TENSORBOARD = """
import errno, os, sys
from tensorboardX import record_writer
from perceiver_jax import metrics

real_write = record_writer.RecordWriter.write
calls = []

def write(self, data):  # the first event (the file header) fits, then the disk is full
  calls.append(data)
  if len(calls) > 1:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
  real_write(self, data)

record_writer.RecordWriter.write = write
writer = metrics.MetricWriter(sys.argv[1])
try:
  for step in range(100):  # tensorboardX's queue held 10 events before its put() blocked
    writer.write_scalars(step, {"train/loss": 1.0, "train/grad_norm": 2.0})
except OSError as e:
  print(e)
writer.close()
"""


def test_a_full_disk_during_a_tensorboard_write_raises_instead_of_hanging(tmp_path):
  # In a subprocess with a timeout: the failure this guards against was a hang for ever.
  env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
  result = subprocess.run(
    [sys.executable, "-c", _FULL_DISK_FOR_TENSORBOARD, str(tmp_path)],
    env=env,
    capture_output=True,
    text=True,
    timeout=60,
  )
  assert result.returncode == 0, result.stderr
  (event_file,) = glob.glob(str(tmp_path / "tensorboard" / "events.out.tfevents.*"))
  assert result.stdout == f"[Errno {errno.ENOSPC}] No space left on device: '{event_file}'\n"
  assert len(read_lines(tmp_path)) == 1  # the step-0 line, written before the event


def test_a_failed_config_write_keeps_the_old_file_and_names_it(tmp_path, monkeypatch):
  config = ml_collections.ConfigDict({"seed": 1})
  metrics.write_config(str(tmp_path), config)
  real_fsync = os.fsync

  def full_fsync(fd):
    if _is_open_on(fd, ".tmp"):
      raise ENOSPC
    real_fsync(fd)

  monkeypatch.setattr(os, "fsync", full_fsync)
  config.seed = 2
  with pytest.raises(OSError) as info:
    metrics.write_config(str(tmp_path), config)
  path = tmp_path / "config.json"
  assert str(info.value) == f"[Errno {errno.ENOSPC}] No space left on device: '{path}'"
  assert json.loads(path.read_text()) == {"seed": 1}
  assert os.listdir(tmp_path) == ["config.json"]  # no temporary file left behind


@pytest.mark.parametrize(
  "seconds, text", [(0, "0s"), (45.4, "45s"), (390, "6m30s"), (3599, "59m59s"), (7500, "2h05m")]
)
def test_format_duration(seconds, text):
  assert metrics.format_duration(seconds) == text


class FakeClock:
  def __init__(self):
    self.now = 1000.0

  def __call__(self) -> float:
    return self.now


def test_progress_logger_times_rates_and_eta():
  clock, lines = FakeClock(), []
  progress = metrics.ProgressLogger(6000, every_seconds=30.0, log_fn=lines.append, clock=clock)

  clock.now += 10
  assert progress.update(100, 128) is None  # under 30 s since the start
  clock.now += 20
  rates = progress.update(300, 128)
  assert rates == pytest.approx({"train/steps_per_sec": 10.0, "train/examples_per_sec": 1280.0})
  assert lines == ["step 300/6000 (5.0%)  10.0 steps/s  1280 examples/s  ETA 9m30s"]

  clock.now += 15
  assert progress.update(500, 128) is None  # 15 s since the last line
  clock.now += 15
  rates = progress.update(900, 128)  # rates over the interval: 600 steps in 30 s
  assert rates == pytest.approx({"train/steps_per_sec": 20.0, "train/examples_per_sec": 2560.0})
  assert lines[-1] == "step 900/6000 (15.0%)  20.0 steps/s  2560 examples/s  ETA 4m15s"

  clock.now += 2
  rates = progress.update(6000, 128)  # the last step always logs
  assert rates["train/steps_per_sec"] == pytest.approx(2550.0)
  assert lines[-1].endswith("ETA 0s")
  assert len(lines) == 3
  assert progress.update(6000, 128) is None  # nothing new to measure


def test_progress_logger_start_step():
  clock, lines = FakeClock(), []
  progress = metrics.ProgressLogger(
    2000, every_seconds=30.0, start_step=1000, log_fn=lines.append, clock=clock
  )
  clock.now += 40
  rates = progress.update(1400, 4)
  assert rates == pytest.approx({"train/steps_per_sec": 10.0, "train/examples_per_sec": 40.0})
  assert lines == ["step 1400/2000 (70.0%)  10.0 steps/s  40 examples/s  ETA 1m00s"]
