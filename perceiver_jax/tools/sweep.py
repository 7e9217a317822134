"""Runs a grid of training runs and tabulates their final metrics: the machinery of
`scripts/sweep.py`, whose docstring gives the command line.

The grid is the Cartesian product of the sweep values, the first varying slowest; each point is
one `python -m perceiver_jax.main` run in its own workdir. A point is finished when, and only
when, its workdir holds the trainer's `final.json`; finished points are skipped unless asked to
rerun, so an interrupted sweep resumes. A run that exits 0 without `final.json` was preempted
(the trainer saves a checkpoint and exits 0 on SIGTERM): the point is "preempted (resumable)",
and rerunning the sweep resumes it from its checkpoint. The summary line counts the points
that remain.

The results table has one row per point: its swept values, then the eval metrics the points
reported (the `eval/*` keys of their `final.json`, whatever the task: GLUE's `eval/score`,
`eval/accuracy`, `eval/f1`, ...; MLM's `eval/masked_accuracy`), the selection metric first and
the rest in alphabetical order, then the last `TRAIN_COLUMNS`, the status, and `*` in the `best`
column of the best point. The selection metric is the first of `SELECTION_METRICS` that a point
reported; the best point is the finished point with its highest value (lowest for a loss), the
earliest in the grid on a tie. A point that did not finish shows the last values its
`metrics.jsonl` holds, and is never the best.
"""

from __future__ import annotations

import csv
import io
import itertools
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable

from perceiver_jax import metrics

# (metric, higher is better), in order of preference: the task's own score (GLUE), top-1
# accuracy (classification), masked-byte accuracy (MLM), mean average precision (multi-label),
# and the eval loss, lower is better, for a task that reports nothing else.
SELECTION_METRICS = (
  ("eval/score", True),
  ("eval/top1", True),
  ("eval/masked_accuracy", True),
  ("eval/mAP", True),
  ("eval/loss", False),
)
TRAIN_COLUMNS = ("train/loss", "train/steps_per_sec")
_SWEEP_RE = re.compile(r"(config(?:\.[A-Za-z_]\w*)+)=(.+)")


def _split_values(text: str) -> list[str]:
  """Splits on commas outside brackets, so tuple values such as `(32,32)` stay whole."""
  values, depth, start = [], 0, 0
  for i, char in enumerate(text):
    depth += (char in "([{") - (char in ")]}")
    if char == "," and depth == 0:
      values.append(text[start:i])
      start = i + 1
  values.append(text[start:])
  return [v.strip() for v in values]


def parse_sweep(spec: str) -> tuple[str, list[str]]:
  """`config.a.b=v1,v2` -> (`config.a.b`, [`v1`, `v2`]); ValueError on bad syntax.

  Values stay strings: the trainer's `--config.a.b=v` flag parses them to the field's type.
  """
  match = _SWEEP_RE.fullmatch(spec.strip())
  if not match:
    raise ValueError(f"bad --sweep={spec!r}: expected config.a.b=v1,v2,...")
  key, values = match.group(1), _split_values(match.group(2))
  if "" in values:
    raise ValueError(f"bad --sweep={spec!r}: empty value")
  if len(set(values)) != len(values):
    raise ValueError(f"bad --sweep={spec!r}: repeated value")
  return key, values


def grid(sweeps: list[tuple[str, list[str]]]) -> list[dict[str, str]]:
  """The Cartesian product of the sweeps as `{key: value}` points, the first sweep slowest."""
  keys = [key for key, _ in sweeps]
  if len(set(keys)) != len(keys):
    raise ValueError(f"a key is swept twice: {keys}")
  return [
    dict(zip(keys, values, strict=True)) for values in itertools.product(*(v for _, v in sweeps))
  ]


def point_dirname(index: int, point: dict[str, str]) -> str:
  """`003_learning_rate=0.002_num_latents=64`: the index keeps it unique, the rest is for people."""
  slug = "_".join(f"{key.rsplit('.', 1)[-1]}={value}" for key, value in point.items())
  slug = re.sub(r"[^A-Za-z0-9._=+-]+", "-", slug.replace(" ", ""))[:100]
  return f"{index:03d}_{slug}" if slug else f"{index:03d}"


def point_command(
  config: str, point_dir: str, point: dict[str, str], extras: list[str]
) -> list[str]:
  """The trainer's command line for one point."""
  return [
    sys.executable,
    "-m",
    "perceiver_jax.main",
    f"--config={config}",
    f"--workdir={point_dir}",
    *[f"--{key}={value}" for key, value in point.items()],
    *extras,
  ]


def is_finished(point_dir: str) -> bool:
  """Whether the run finished: the trainer writes `final.json` after its last step."""
  return metrics.read_final(point_dir) is not None


def run_sweep(
  config: str,
  workdir: str,
  points: list[dict[str, str]],
  extras: list[str],
  *,
  rerun: bool = False,
  runner: Callable[[list[str]], int] = subprocess.call,
) -> list[str]:
  """Runs the points one after another; returns each point's status (see `point_status`)."""
  statuses = []
  for index, point in enumerate(points):
    point_dir = os.path.join(workdir, point_dirname(index, point))
    if not rerun and is_finished(point_dir):
      print(f"[sweep] {index + 1}/{len(points)} {point_dir}: finished before, skipped", flush=True)
      statuses.append("ok (earlier run)")
      continue
    print(f"[sweep] {index + 1}/{len(points)} {point_dir}", flush=True)
    returncode = runner(point_command(config, point_dir, point, extras))
    status = point_status(point_dir, returncode)
    if status != "ok":
      print(f"[sweep] {index + 1}/{len(points)} {point_dir}: {status}", flush=True)
    statuses.append(status)
  return statuses


def point_status(point_dir: str, returncode: int) -> str:
  """`ok` if the run finished (its `final.json` exists), else why not: `failed (exit N)`, or
  `preempted (resumable)` for an exit 0 without `final.json` (a SIGTERM'd trainer)."""
  if returncode != 0:
    return f"failed (exit {returncode})"
  return "ok" if is_finished(point_dir) else "preempted (resumable)"


def point_metrics(point_dir: str) -> tuple[dict, dict]:
  """`(eval, train)`: a point's final eval metrics (its `final.json`'s `eval/*` keys, or for
  an unfinished run the last ones in `metrics.jsonl`) and its last `train/*` values."""
  path = os.path.join(point_dir, metrics.METRICS_FILE)
  last = metrics.final_metrics(path) if os.path.exists(path) else {}
  final = metrics.read_final(point_dir)
  evals = last if final is None else final
  return (
    {k: v for k, v in evals.items() if k.startswith("eval/")},
    {k: v for k, v in last.items() if k.startswith("train/")},
  )


def selection_metric(evals: list[dict]) -> tuple[str, bool] | None:
  """The first `(metric, higher_is_better)` of `SELECTION_METRICS` that any point reported."""
  reported = {key for record in evals for key in record}
  return next(((m, higher) for m, higher in SELECTION_METRICS if m in reported), None)


def best_point(evals: list[dict], statuses: list[str]) -> tuple[int, str, float] | None:
  """`(index, metric, value)` of the finished point with the best selection metric (see the
  module doc), or None if no finished point has a finite value of it."""
  selection = selection_metric(evals)
  if selection is None:
    return None
  metric, higher = selection
  candidates = [
    (value if higher else -value, -index, value)
    for index, (record, status) in enumerate(zip(evals, statuses, strict=True))
    if status.startswith("ok") and (value := record.get(metric)) is not None
  ]
  if not candidates:
    return None
  _, negative_index, value = max(candidates)
  return -negative_index, metric, value


def results_table(
  workdir: str, points: list[dict[str, str]], statuses: list[str]
) -> tuple[list[list], str]:
  """The results table and the best-point line (see the module doc).

  Returns:
    `(rows, best)`: a header row, then per point its swept values, its eval metrics, its
    `TRAIN_COLUMNS`, its status and `*` if it is the best point; a metric is None where the run
    never wrote it or its last value was non-finite. `best` is
    `best: <point dir> <metric>=<value> (highest of N finished points)` (`lowest` for a loss),
    or says why there is none.
  """
  names = [point_dirname(index, point) for index, point in enumerate(points)]
  records = [point_metrics(os.path.join(workdir, name)) for name in names]
  evals, trains = [r[0] for r in records], [r[1] for r in records]
  selection = selection_metric(evals)
  first = [selection[0]] if selection else []
  columns = first + sorted({k for record in evals for k in record} - set(first))
  best = best_point(evals, statuses)
  keys = list(points[0]) if points else []
  rows = [
    [key.removeprefix("config.") for key in keys] + columns + [*TRAIN_COLUMNS, "status", "best"]
  ]
  for index, point in enumerate(points):
    rows.append(
      [point[key] for key in keys]
      + [evals[index].get(c) for c in columns]
      + [trains[index].get(c) for c in TRAIN_COLUMNS]
      + [statuses[index], "*" if best is not None and best[0] == index else ""]
    )
  finished = sum(s.startswith("ok") for s in statuses)
  if best is not None:
    index, metric, value = best
    which = "highest" if selection[1] else "lowest"
    line = f"best: {names[index]} {metric}={_cell(value)} ({which} of {finished} finished points)"
  elif selection is None:
    line = "best: none (no point reported an eval metric)"
  else:
    line = f"best: none (no finished point has a finite {selection[0]})"
  return rows, line


def _cell(value) -> str:
  if value is None:
    return ""
  return f"{value:.4g}" if isinstance(value, float) else str(value)


def to_markdown(rows: list[list]) -> str:
  """A markdown table of `results_table` rows, numbers to 4 significant digits."""
  lines = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
  lines.insert(1, "|" + "---|" * len(rows[0]))
  return "\n".join(lines) + "\n"


def to_csv(rows: list[list]) -> str:
  """The same rows as CSV."""
  out = io.StringIO()
  # Full precision here: the CSV is for scripts, the markdown table for people.
  csv.writer(out, lineterminator="\n").writerows(
    [["" if v is None else v for v in r] for r in rows]
  )
  return out.getvalue()


def run(
  config: str, workdir: str, specs: list[str], extras: list[str], *, print_only: bool, rerun: bool
) -> None:
  """The command line: the grid of `--sweep` `specs`, printed or run and tabulated.

  ValueError (one line) for a missing config file or a bad `--sweep`.
  """
  config_file = config.split(":", 1)[0]
  if not os.path.isfile(config_file):
    raise ValueError(f"--config file {config_file!r} does not exist")
  points = grid([parse_sweep(spec) for spec in specs])
  if print_only:
    for index, point in enumerate(points):
      point_dir = os.path.join(workdir, point_dirname(index, point))
      print(shlex.join(point_command(config, point_dir, point, extras)))
    return
  os.makedirs(workdir, exist_ok=True)
  statuses = run_sweep(config, workdir, points, extras, rerun=rerun)
  rows, best = results_table(workdir, points, statuses)
  markdown = to_markdown(rows) + f"\n{best}\n"
  metrics.atomic_write_text(os.path.join(workdir, "results.md"), markdown)
  metrics.atomic_write_text(os.path.join(workdir, "results.csv"), to_csv(rows))
  print(markdown, end="")
  print(f"[sweep] {summary(statuses)}; tables in {workdir}")


def summary(statuses: list[str]) -> str:
  """`3/4 points ok, 1 remain (1 preempted, resumable: rerun the sweep)`."""
  done = sum(s.startswith("ok") for s in statuses)
  line = f"{done}/{len(statuses)} points ok"
  if done == len(statuses):
    return line
  preempted = statuses.count("preempted (resumable)")
  line += f", {len(statuses) - done} remain"
  if preempted:
    line += f" ({preempted} preempted, resumable: rerun the sweep)"
  return line
