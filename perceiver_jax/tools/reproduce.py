"""The machinery of the reproduced findings: train an experiment's grid, collect its runs'
results, and write its table, CSV and plot. `scripts/reproduce.py` is the command line.

Each experiment is defined beside its results, in `experiments/<folder>/experiment.py`:
`NAME` (its command-line name), `experiment(quick) -> Experiment` (the grid and the budget)
and `report(records, exp, out, options) -> str` (its Markdown table; it writes its CSV and
plot into `out`). Every training run is a point of `tools/sweep.py` (`python -m
perceiver_jax.main` on `configs/fashion_mnist.py`) in RUNS_DIR/<row>/<NNN_seed=S>; a row's
`--config.a.b=v` overrides are applied by ml_collections' config flags, in the trainer and
here alike.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import importlib.util
import io
import os
import pathlib
import statistics
import time
import types
from typing import Any

import ml_collections
from absl import flags
from ml_collections import config_flags

from perceiver_jax import metrics
from perceiver_jax import model as model_lib
from perceiver_jax.tools import flops
from perceiver_jax.tools import sweep

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
EXPERIMENTS_DIR = REPO_ROOT / "experiments"
CONFIG = "configs/fashion_mnist.py"


@dataclasses.dataclass(frozen=True)
class Row:
  """One configuration of an experiment, trained once per seed."""

  name: str  # the row's folder and label
  config_arg: str  # the argument of configs/fashion_mnist.py
  overrides: tuple[tuple[str, Any], ...] = ()  # (a.b, value): the flag --config.a.b=value
  labels: tuple[tuple[str, str], ...] = ()  # columns of the results table

  @property
  def config(self) -> str:
    return f"{CONFIG}:{self.config_arg}" if self.config_arg else CONFIG

  @property
  def flags(self) -> list[str]:
    return [f"--config.{key}={value}" for key, value in self.overrides]


@dataclasses.dataclass(frozen=True)
class Experiment:
  rows: tuple[Row, ...]
  seeds: tuple[int, ...]
  steps: int  # training steps of every run


@dataclasses.dataclass(frozen=True)
class Options:
  """The command line's arguments."""

  quick: bool = False  # 2 steps per run, one seed
  runs_dir: str = "workdirs/reproduce"
  out_dir: str = "experiments"
  data_dir: str | None = None  # Fashion-MNIST IDX files (None: the trainer's default)
  attention_images: int = 4  # test images whose attention maps are plotted


@functools.cache
def definitions() -> dict[str, tuple[str, types.ModuleType]]:
  """NAME -> (folder, module) of every `experiments/<folder>/experiment.py`."""
  out = {}
  for path in sorted(EXPERIMENTS_DIR.glob("*/experiment.py")):
    folder = path.parent.name
    spec = importlib.util.spec_from_file_location(f"experiments.{folder}.experiment", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out[module.NAME] = (folder, module)
  return out


def load(name: str) -> types.ModuleType:
  """The definition module of experiment `name`; ValueError naming the known ones."""
  if name not in definitions():
    raise ValueError(f"unknown experiment {name!r}; expected one of {sorted(definitions())}")
  return definitions()[name][1]


def config(row: Row, *extra_flags: str) -> ml_collections.ConfigDict:
  """The config the row's runs train: its config file, `extra_flags` (e.g. `_budget_flags`)
  and the row's flags after them, as a run passes them, parsed by config_flags as the
  trainer parses them (a misspelt field is an error)."""
  argv = ["reproduce", f"--config={REPO_ROOT / row.config}", *extra_flags, *row.flags]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", flag_values=flag_values, sys_argv=argv)
  flag_values(argv)
  return flag_values.config


# The optimizer recipe every experiment here was measured with (AdamW 2e-3, flat then
# cosine, no label smoothing): the default experiment's own recipe (warm-up, label
# smoothing) is tuned for its 5 epochs, not for these fixed budgets of a few hundred steps.
RECIPE_FLAGS = (
  "--config.optimizer.schedule=constant_cosine",
  "--config.optimizer.learning_rate=0.002",
  "--config.optimizer.warmup_steps=0",
  "--config.task.label_smoothing=0.0",
)


def _budget_flags(steps: int, data_dir: str | None) -> list[str]:
  flags_ = [
    *RECIPE_FLAGS,
    f"--config.total_steps={steps}",
    f"--config.eval_every_steps={steps}",  # the whole test set once, at the end
    f"--config.checkpoint_every_steps={max(steps // 2, 1)}",
    f"--config.log_every_steps={max(steps // 10, 1)}",
  ]
  if data_dir:
    flags_.append(f"--config.data.data_dir={data_dir}")
  return flags_


def _seed_points(exp: Experiment) -> list[dict[str, str]]:
  return [{"config.seed": str(seed)} for seed in exp.seeds]


def run_dirs(runs_dir: str, exp: Experiment, row: Row) -> list[str]:
  points = _seed_points(exp)
  return [os.path.join(runs_dir, row.name, sweep.point_dirname(i, p)) for i, p in enumerate(points)]


def train(runs_dir: str, exp: Experiment, data_dir: str | None) -> list[str]:
  """Runs (or resumes, or skips) every run of the experiment; returns the failed run dirs."""
  failed = []
  for row in exp.rows:
    row_dir = os.path.join(runs_dir, row.name)
    extras = _budget_flags(exp.steps, data_dir) + row.flags
    statuses = sweep.run_sweep(row.config, row_dir, _seed_points(exp), extras)
    dirs = run_dirs(runs_dir, exp, row)
    failed += [d for d, s in zip(dirs, statuses, strict=True) if not s.startswith("ok")]
  return failed


def collect(runs_dir: str, exp: Experiment) -> list[dict]:
  """One record per run: the row, seed, run dir, final test metrics and training seconds."""
  records = []
  for row in exp.rows:
    for seed, run_dir in zip(exp.seeds, run_dirs(runs_dir, exp, row), strict=True):
      final = metrics.read_final(run_dir) or {}
      records.append(
        dict(
          row=row,
          seed=seed,
          run_dir=run_dir,
          top1=final.get("eval/top1"),
          top5=final.get("eval/top5"),
          loss=final.get("eval/loss"),
          seconds=final.get("seconds"),
        )
      )
  return records


@functools.cache
def size_and_flops(row: Row) -> tuple[int, float]:
  """(parameters, forward FLOPs per example from XLA's cost analysis; a multiply-add is 2).

  The same for every seed of a row, so computed once per row.
  """
  cfg = config(row).model
  return model_lib.count_params(model_lib.param_shapes(cfg)[0]), flops.xla_forward_flops(cfg)


def train_accuracy(run_dir: str, row: Row, data_dir: str | None, limit: int = 10_000) -> float:
  """Top-1 of the run's final parameters on the first `limit` training images."""
  import jax  # noqa: PLC0415 (only the reports that need it pay for the model imports)
  import numpy as np  # noqa: PLC0415

  from perceiver_jax import losses  # noqa: PLC0415
  from perceiver_jax import pretrained  # noqa: PLC0415
  from perceiver_jax.data import fashion_mnist  # noqa: PLC0415

  forward, params, state = pretrained.load_trained_model(run_dir, config(row).model)
  images, labels = fashion_mnist.load_split("train", data_dir)
  images, labels = images[:limit], labels[:limit]
  apply = jax.jit(lambda p, s, x: forward.apply(p, s, None, x, is_training=False)[0])
  correct = 0.0
  for start in range(0, len(labels), 500):
    logits = apply(params, state, fashion_mnist.normalize(images[start : start + 500]))
    correct += float(np.sum(losses.topk_correct(logits, labels[start : start + 500], 1)))
  return correct / len(labels)


def size_and_train_accuracy(records: list[dict], data_dir: str | None) -> dict[str, dict]:
  """run dir -> {parameters, flops, train_top1} of each record's run."""
  extra = {}
  for r in records:
    parameters, forward_flops = size_and_flops(r["row"])
    extra[r["run_dir"]] = dict(
      parameters=parameters,
      flops=forward_flops,
      train_top1=train_accuracy(r["run_dir"], r["row"], data_dir),
    )
  return extra


def mean_std(values: list[float | None]) -> str:
  """`81.0 ± 1.0` in percent (one value alone; empty if none)."""
  values = [100 * v for v in values if v is not None]
  if not values:
    return ""
  if len(values) == 1:
    return f"{values[0]:.1f}"
  return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def stats(values: list[float | None]) -> tuple[float, float]:
  """(mean, standard deviation) in percent; 0 where undefined."""
  values = [100 * v for v in values if v is not None]
  if not values:
    return 0.0, 0.0
  return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def markdown(rows: list[list[str]]) -> str:
  """A Markdown table: the first row is the header."""
  lines = ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
  lines.insert(1, "|" + "---|" * len(rows[0]))
  return "\n".join(lines) + "\n"


def write_run_csv(out: str, records: list[dict], extra: dict | None = None) -> None:
  """`out/results.csv`: one row per run, its labels, seed, metrics and `extra` columns."""
  label_keys = [k for k, _ in records[0]["row"].labels]
  extra = extra or {}
  extra_keys = sorted({k for v in extra.values() for k in v})
  header = [*label_keys, "seed", "test_top1", "test_top5", "test_loss", "train_seconds"]
  rows = [header + extra_keys]
  for r in records:
    labels = dict(r["row"].labels)
    more = extra.get(r["run_dir"], {})
    rows.append(
      [labels[k] for k in label_keys]
      + [r["seed"], r["top1"], r["top5"], r["loss"], r["seconds"]]
      + [more.get(k) for k in extra_keys]
    )
  text = io.StringIO()
  csv.writer(text, lineterminator="\n").writerows(rows)
  metrics.atomic_write_text(os.path.join(out, "results.csv"), text.getvalue())


def bar_plot(path: str, groups: list[str], series: dict[str, list[tuple[float, float]]], title):
  """Grouped bars with error bars: `series` maps a legend label to (mean, std) per group."""
  import matplotlib  # noqa: PLC0415

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415
  import numpy as np  # noqa: PLC0415

  fig, ax = plt.subplots(figsize=(1.6 * len(groups) + 2, 3.6))
  width = 0.8 / len(series)
  x = np.arange(len(groups))
  for i, (label, values) in enumerate(series.items()):
    means = [m for m, _ in values]
    stds = [s for _, s in values]
    ax.bar(x + (i - (len(series) - 1) / 2) * width, means, width, yerr=stds, capsize=3, label=label)
  ax.set_xticks(x, groups, fontsize=8)
  ax.set_ylabel("test top-1 (%)")
  low = min(m - s for values in series.values() for m, s in values)
  ax.set_ylim(max(0, low - 5), 100)
  ax.set_title(title, fontsize=10)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


class RunsFailed(RuntimeError):
  """Some training runs of an experiment failed (rerunning resumes them)."""


def run(name: str, options: Options) -> dict:
  """Trains (or resumes) experiment `name`, then writes OUT_DIR/<folder>/results.md (and
  the experiment's CSV and plot); returns {"out": the results folder, "runs": how many}."""
  folder, definition = definitions()[name][0], load(name)
  exp = definition.experiment(options.quick)
  runs_dir = os.path.join(options.runs_dir, name + ("_quick" if options.quick else ""))
  out = os.path.join(options.out_dir, folder)
  started = time.monotonic()
  failed = train(runs_dir, exp, options.data_dir)
  if failed:
    raise RunsFailed(f"{len(failed)} run(s) failed, e.g. {failed[0]}; rerun to resume them")
  os.makedirs(out, exist_ok=True)
  records = collect(runs_dir, exp)
  body = definition.report(records, exp, out, options)
  train_seconds = sum(r["seconds"] or 0.0 for r in records)
  quick = " --quick" if options.quick else ""
  header = (
    f"# {name}{' (quick)' if options.quick else ''}\n\n"
    f"Command: `python scripts/reproduce.py {name}{quick}`. "
    f"{len(records)} run(s) of {exp.steps} steps; training loops "
    f"{metrics.format_duration(train_seconds)} in all; this invocation took "
    f"{metrics.format_duration(time.monotonic() - started)} (finished runs are not rerun).\n\n"
  )
  metrics.atomic_write_text(os.path.join(out, "results.md"), header + body)
  print(header + body, end="")
  return {"out": out, "runs": len(records)}
