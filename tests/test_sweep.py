"""Tests of `perceiver_jax/tools/sweep.py` and `scripts/sweep.py`: the grid, the commands,
resuming, the results tables.

Nothing here trains: runs are faked by writing `metrics.jsonl` and `final.json` files.
"""

import csv
import io
import os
import pathlib
import shlex
import subprocess
import sys

import pytest

from perceiver_jax import metrics
from perceiver_jax.tools import sweep

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent

LR = "config.optimizer.learning_rate"
LATENTS = "config.model.num_latents"
CONFIG = "configs/imagenet.py:variant=testing"


def two_by_two() -> list[dict[str, str]]:
  return sweep.grid([sweep.parse_sweep(f"{LR}=1e-3,2e-3"), sweep.parse_sweep(f"{LATENTS}=64,128")])


def test_parse_sweep():
  assert sweep.parse_sweep(f"{LR}=1e-3, 2e-3") == (LR, ["1e-3", "2e-3"])
  assert sweep.parse_sweep("config.seed=0") == ("config.seed", ["0"])
  # Commas inside brackets belong to one value.
  assert sweep.parse_sweep("config.data.image_shape=(32,32),(64,64)") == (
    "config.data.image_shape",
    ["(32,32)", "(64,64)"],
  )


@pytest.mark.parametrize(
  "spec, message",
  [
    ("optimizer.learning_rate=1e-3", "expected config.a.b=v1,v2"),
    ("config.optimizer.learning_rate", "expected config.a.b=v1,v2"),
    ("config.=1", "expected config.a.b=v1,v2"),
    ("config.a.b=", "expected config.a.b=v1,v2"),
    ("config.a.b=1,,2", "empty value"),
    ("config.a.b=1,2,1", "repeated value"),
  ],
)
def test_parse_sweep_errors(spec, message):
  with pytest.raises(ValueError, match=message) as info:
    sweep.parse_sweep(spec)
  assert "\n" not in str(info.value)


def test_grid_order():
  assert two_by_two() == [
    {LR: "1e-3", LATENTS: "64"},
    {LR: "1e-3", LATENTS: "128"},
    {LR: "2e-3", LATENTS: "64"},
    {LR: "2e-3", LATENTS: "128"},
  ]
  assert sweep.grid([]) == [{}]
  with pytest.raises(ValueError, match="swept twice"):
    sweep.grid([(LR, ["1"]), (LR, ["2"])])


def test_point_dirname():
  assert (
    sweep.point_dirname(3, {LR: "2e-3", LATENTS: "128"}) == "003_learning_rate=2e-3_num_latents=128"
  )
  assert (
    sweep.point_dirname(0, {"config.data.image_shape": "(32, 32)"}) == "000_image_shape=-32-32-"
  )
  assert sweep.point_dirname(1, {}) == "001"


def run_script(*args: str) -> subprocess.CompletedProcess:
  # PYTHONPATH: this checkout, whatever copy of the package is installed.
  env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "JAX_PLATFORMS": "cpu"}
  return subprocess.run(
    [sys.executable, "scripts/sweep.py", *args],
    cwd=REPO_ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=120,
  )


def test_print_only(tmp_path):
  result = run_script(
    f"--config={CONFIG}",
    f"--workdir={tmp_path}",
    f"--sweep={LR}=1e-3,2e-3",
    f"--sweep={LATENTS}=64,128",
    "--extra=--config.seed=1",
    "--print_only",
  )
  assert result.returncode == 0, result.stderr
  commands = [shlex.split(line) for line in result.stdout.splitlines()]
  assert len(commands) == 4
  assert commands[3] == [
    sys.executable,
    "-m",
    "perceiver_jax.main",
    f"--config={CONFIG}",
    f"--workdir={tmp_path}/003_learning_rate=2e-3_num_latents=128",
    f"--{LR}=2e-3",
    f"--{LATENTS}=128",
    "--config.seed=1",
  ]
  assert [c[5:7] for c in commands] == [
    [f"--{LR}={lr}", f"--{LATENTS}={n}"] for lr in ("1e-3", "2e-3") for n in ("64", "128")
  ]
  assert os.listdir(tmp_path) == []  # printing creates nothing


def test_bad_sweep_is_a_one_line_error(tmp_path):
  result = run_script(f"--config={CONFIG}", f"--workdir={tmp_path}", "--sweep=lr=1", "--print_only")
  assert result.returncode != 0
  assert result.stderr.strip() == "error: bad --sweep='lr=1': expected config.a.b=v1,v2,..."


def write_run(point_dir, train_loss, top1=None, finished=None):
  """Fakes a run: a train line, then (if it got that far) an eval line, then (if it finished,
  by default when it has an eval line) the trainer's `final.json`."""
  writer = metrics.MetricWriter(str(point_dir))
  writer.write_scalars(100, {"train/loss": train_loss, "train/steps_per_sec": 12.5})
  if top1 is not None:
    scalars = {"eval/top1": top1, "eval/top5": top1 + 0.2, "eval/loss": train_loss + 0.1}
    writer.write_scalars(100, scalars)
    if finished is None or finished:
      metrics.write_final(str(point_dir), 100, scalars)
  writer.close()


def test_results_table(tmp_path):
  points = two_by_two()
  dirs = [tmp_path / sweep.point_dirname(i, p) for i, p in enumerate(points)]
  write_run(dirs[0], 1.5, top1=0.625)
  write_run(dirs[1], 1.25, top1=0.75)
  write_run(dirs[2], 2.0)  # failed after its first log line
  write_run(dirs[3], 1.0, top1=0.8125)
  statuses = ["ok", "ok", "failed (exit 1)", "ok"]
  rows, best = sweep.results_table(str(tmp_path), points, statuses)
  # The reported eval metrics: the selection metric (top-1) first, the others alphabetically.
  assert rows[0] == [
    "optimizer.learning_rate",
    "model.num_latents",
    "eval/top1",
    "eval/loss",
    "eval/top5",
    "train/loss",
    "train/steps_per_sec",
    "status",
    "best",
  ]
  assert rows[1] == ["1e-3", "64", 0.625, 1.6, 0.825, 1.5, 12.5, "ok", ""]
  assert rows[3] == ["2e-3", "64", None, None, None, 2.0, 12.5, "failed (exit 1)", ""]
  assert rows[4][-1] == "*"
  assert best == (
    f"best: {sweep.point_dirname(3, points[3])} eval/top1=0.8125 (highest of 3 finished points)"
  )

  markdown = sweep.to_markdown(rows).splitlines()
  assert len(markdown) == 6
  assert markdown[1] == "|---|---|---|---|---|---|---|---|---|"
  assert markdown[2] == "| 1e-3 | 64 | 0.625 | 1.6 | 0.825 | 1.5 | 12.5 | ok |  |"
  assert markdown[4] == "| 2e-3 | 64 |  |  |  | 2 | 12.5 | failed (exit 1) |  |"

  parsed = list(csv.reader(io.StringIO(sweep.to_csv(rows))))
  assert parsed[0] == rows[0]
  assert parsed[3] == ["2e-3", "64", "", "", "", "2.0", "12.5", "failed (exit 1)", ""]
  assert float(parsed[4][2]) == 0.8125


BATCH = "config.batch_size"


def write_glue_run(point_dir, score, accuracy, finished=True):
  """Fakes an MRPC fine-tuning run: its eval metrics are GLUE's, its score the mean of F1 and
  accuracy; only a finished run has `final.json`."""
  scalars = {
    "eval/accuracy": accuracy,
    "eval/f1": 2 * score - accuracy,
    "eval/score": score,
    "eval/loss": 0.5,
    "eval/count": 408,
  }
  writer = metrics.MetricWriter(str(point_dir))
  writer.write_scalars(50, {"train/loss": 0.25, "train/steps_per_sec": 3.0})
  writer.write_scalars(50, scalars)
  writer.close()
  if finished:
    metrics.write_final(str(point_dir), 50, scalars, seconds=12.0)


def test_glue_table_shows_the_task_score_and_picks_the_best_by_it(tmp_path):
  points = sweep.grid([sweep.parse_sweep(f"{BATCH}=16,32,64")])
  dirs = [tmp_path / sweep.point_dirname(i, p) for i, p in enumerate(points)]
  write_glue_run(dirs[0], score=0.8, accuracy=0.78)
  write_glue_run(dirs[1], score=0.85, accuracy=0.75)  # the best score, not the best accuracy
  write_glue_run(dirs[2], score=0.9, accuracy=0.9, finished=False)  # preempted: never the best
  statuses = ["ok", "ok (earlier run)", "preempted (resumable)"]
  rows, best = sweep.results_table(str(tmp_path), points, statuses)
  assert rows[0] == [
    "batch_size",
    "eval/score",
    "eval/accuracy",
    "eval/count",
    "eval/f1",
    "eval/loss",
    "train/loss",
    "train/steps_per_sec",
    "status",
    "best",
  ]
  assert rows[2] == [
    "32",
    0.85,
    0.75,
    408,
    pytest.approx(0.95),
    0.5,
    0.25,
    3.0,
    "ok (earlier run)",
    "*",
  ]
  assert rows[3][1] == 0.9 and rows[3][-1] == ""  # its last mid-run values, shown but not best
  assert [row[-1] for row in rows[1:]] == ["", "*", ""]
  assert best == "best: 001_batch_size=32 eval/score=0.85 (highest of 2 finished points)"


@pytest.mark.parametrize(
  "evals, statuses, expected",
  [
    # MLM: masked-byte accuracy, higher is better.
    (
      [{"eval/masked_accuracy": 0.3, "eval/loss": 2.0}, {"eval/masked_accuracy": 0.4}],
      ["ok"] * 2,
      1,
    ),
    # Only a loss: lower is better.
    ([{"eval/loss": 2.0}, {"eval/loss": 1.5}, {"eval/loss": 1.75}], ["ok"] * 3, 1),
    # A tie goes to the earliest point; a non-finite value (None) never wins.
    ([{"eval/top1": None}, {"eval/top1": 0.5}, {"eval/top1": 0.5}], ["ok"] * 3, 1),
    # eval/score outranks top-1 whenever any point reports it.
    ([{"eval/top1": 0.9}, {"eval/top1": 0.1, "eval/score": 0.2}], ["ok"] * 2, 1),
  ],
)
def test_best_point_by_the_selection_metric(evals, statuses, expected):
  assert sweep.best_point(evals, statuses)[0] == expected


def test_no_best_point():
  assert sweep.best_point([{}, {}], ["ok", "ok"]) is None
  assert sweep.best_point([{"eval/score": 0.5}], ["failed (exit 1)"]) is None


def test_run_prints_and_writes_the_best_point(tmp_path, monkeypatch, capsys):
  def fake_run_sweep(config, workdir, points, extras, *, rerun):
    for index, (point, score) in enumerate(zip(points, (0.7, 0.75), strict=True)):
      write_glue_run(os.path.join(workdir, sweep.point_dirname(index, point)), score, 0.7)
    return ["ok", "ok"]

  monkeypatch.setattr(sweep, "run_sweep", fake_run_sweep)
  monkeypatch.chdir(REPO_ROOT)
  sweep.run(
    "configs/glue.py:task=mrpc",
    str(tmp_path),
    [f"{BATCH}=16,32"],
    [],
    print_only=False,
    rerun=False,
  )
  out = capsys.readouterr().out
  line = "best: 001_batch_size=32 eval/score=0.75 (highest of 2 finished points)"
  assert line in out.splitlines()
  assert (tmp_path / "results.md").read_text().endswith(f"\n{line}\n")
  assert "eval/score" in (tmp_path / "results.csv").read_text().splitlines()[0]


def test_finished_points_are_skipped(tmp_path, capsys):
  points = two_by_two()
  write_run(tmp_path / sweep.point_dirname(0, points[0]), 1.5, top1=0.625)  # finished
  # Killed right after a mid-run evaluation: its last line holds eval/top1, but it is unfinished.
  write_run(tmp_path / sweep.point_dirname(1, points[1]), 1.5, top1=0.5, finished=False)
  commands = []

  def fake_runner(command):
    commands.append(command)
    if "--config.model.num_latents=128" in command:
      return 1
    write_run(command[4].removeprefix("--workdir="), 1.0, top1=0.5)  # a finished run
    return 0

  statuses = sweep.run_sweep(CONFIG, str(tmp_path), points, ["--config.seed=1"], runner=fake_runner)
  assert statuses == ["ok (earlier run)", "failed (exit 1)", "ok", "failed (exit 1)"]
  assert [c[4] for c in commands] == [
    f"--workdir={tmp_path / sweep.point_dirname(i, points[i])}" for i in (1, 2, 3)
  ]
  assert all(c[-1] == "--config.seed=1" for c in commands)
  assert "finished before, skipped" in capsys.readouterr().out

  commands.clear()
  statuses = sweep.run_sweep(CONFIG, str(tmp_path), points, [], rerun=True, runner=fake_runner)
  assert len(commands) == 4


def test_a_preempted_point_is_resumable_not_finished(tmp_path, capsys):
  """The trainer exits 0 after SIGTERM (checkpoint saved, no final.json): that point remains."""
  points = two_by_two()

  def fake_trainer(command):
    point_dir = command[4].removeprefix("--workdir=")
    # Point 1 is preempted after its first evaluation; the others finish.
    write_run(point_dir, 1.5, top1=0.5, finished="num_latents=128" not in point_dir)
    return 0

  statuses = sweep.run_sweep(CONFIG, str(tmp_path), points[:2], [], runner=fake_trainer)
  assert statuses == ["ok", "preempted (resumable)"]
  assert "preempted (resumable)" in capsys.readouterr().out
  assert sweep.summary(statuses) == (
    "1/2 points ok, 1 remain (1 preempted, resumable: rerun the sweep)"
  )
  rows, best = sweep.results_table(str(tmp_path), points[:2], statuses)
  assert rows[2][-2:] == ["preempted (resumable)", ""]
  assert best.startswith(f"best: {sweep.point_dirname(0, points[0])} eval/top1=0.5 ")

  # Rerunning the sweep skips the finished point and resumes the preempted one.
  resumed = []
  statuses = sweep.run_sweep(
    CONFIG, str(tmp_path), points[:2], [], runner=lambda c: resumed.append(c) or 0
  )
  assert [c[4] for c in resumed] == [f"--workdir={tmp_path / sweep.point_dirname(1, points[1])}"]
  assert statuses == ["ok (earlier run)", "preempted (resumable)"]  # still no final.json


def test_summary_counts_the_points_that_remain():
  assert sweep.summary(["ok", "ok (earlier run)"]) == "2/2 points ok"
  assert sweep.summary(["ok", "failed (exit 1)", "preempted (resumable)"]) == (
    "1/3 points ok, 2 remain (1 preempted, resumable: rerun the sweep)"
  )
  assert sweep.summary(["failed (exit 2)"]) == "0/1 points ok, 1 remain"
