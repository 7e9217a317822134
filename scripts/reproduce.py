"""Reproduces the Perceiver paper's findings in miniature on Fashion-MNIST.

  python scripts/reproduce.py table2      # raw vs permuted pixels, 5 models x 3 seeds
  python scripts/reproduce.py table6      # number and placement of cross-attends
  python scripts/reproduce.py table7      # weight sharing on and off
  python scripts/reproduce.py attention   # cross-attention maps of a trained Perceiver
  [--quick] [--runs_dir=workdirs/reproduce] [--out_dir=experiments] [--data_dir=DIR]

Every training run is a point of `scripts/sweep.py` (`python -m perceiver_jax.main` on
`configs/fashion_mnist.py`), in RUNS_DIR/<experiment>/<row>/<NNN_seed=S>. Rerunning the
command skips finished runs and resumes interrupted ones from their checkpoints, then rebuilds
the tables. Results go to OUT_DIR/<folder>/: `results.md` (the table), `results.csv` (one row
per run) and a plot (PNG).
  table2     -> permuted/        the paper's Table 2
  table6     -> cross_attends/   Table 6
  table7     -> weight_sharing/  Table 7
  attention  -> attention_maps/  Fig. 3 style maps
`--quick` is a smoke test: 2 training steps per run, one seed, on whatever data `--data_dir`
points to; its results are written to OUT_DIR as well, so point that somewhere temporary.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import json
import os
import statistics
import sys
import time

from absl import app
from absl import flags

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import sweep  # noqa: E402  (scripts/sweep.py, beside this file)

from perceiver_jax import metrics  # noqa: E402

CONFIG = "configs/fashion_mnist.py"
FOLDERS = {
  "table2": "permuted",
  "table6": "cross_attends",
  "table7": "weight_sharing",
  "attention": "attention_maps",
}


@dataclasses.dataclass(frozen=True)
class Row:
  """One configuration of an experiment, trained once per seed."""

  name: str  # the row's folder and label
  config_arg: str  # the argument of configs/fashion_mnist.py
  overrides: tuple[tuple[str, str], ...] = ()  # (config.a.b, value) flags
  labels: tuple[tuple[str, str], ...] = ()  # columns of the results table

  @property
  def config(self) -> str:
    return f"{CONFIG}:{self.config_arg}" if self.config_arg else CONFIG


# Table 2 in miniature: every model gets the same 784 pixels + 8-band Fourier features.
TABLE2_MODELS = (
  ("ConvNet (FF)", "fmnist_convnet_ff"),
  ("ViT (FF)", "fmnist_vit_ff"),
  ("Transformer (FF)", "fmnist_transformer_ff"),
  ("Perceiver (FF)", "fmnist_perceiver_ff"),
  ("Perceiver (learned pos.)", "fmnist_perceiver_learned"),
)
# The paper's ImageNet top-1, raw -> permuted (Table 2).
TABLE2_PAPER = {
  "ConvNet (FF)": ("ResNet-50 (FF)", 73.5, 39.4),
  "ViT (FF)": ("ViT-B-16 (FF)", 76.7, 61.7),
  "Transformer (FF)": ("Transformer 64x64 (FF)", 57.0, 57.0),
  "Perceiver (FF)": ("Perceiver (FF)", 78.0, 78.0),
  "Perceiver (learned pos.)": ("Perceiver (learned pos.)", 70.9, 70.9),
}
# Tables 6 and 7 use the default experiment's Perceiver (49 patches of 4x4) at a fixed depth
# of 8 self-attends: 8 blocks of 1 (Table 6) or 4 blocks of 2 (Table 7).
TABLE6_CROSS_ATTENDS = (1, 2, 4, 8)
TABLE6_PAPER = {"interleaved": (76.7, 76.5, 76.5, 78.0), "start": (76.7, 76.7, 75.9, 73.7)}
TABLE7_PAPER = {"shared": (78.0, "44.9M"), "not shared": (72.9, "326.2M")}


@dataclasses.dataclass(frozen=True)
class Experiment:
  rows: tuple[Row, ...]
  seeds: tuple[int, ...]
  steps: int  # training steps of every run


def experiment(name: str, quick: bool) -> Experiment:
  seeds = (0,) if quick else (0, 1, 2)
  if name == "table2":
    rows = []
    for label, model in TABLE2_MODELS:
      for permuted in (False, True):
        rows.append(
          Row(
            f"{model}_{'permuted' if permuted else 'raw'}",
            f"model={model},permuted={permuted}",
            labels=(("model", label), ("inputs", "permuted" if permuted else "raw")),
          )
        )
    return Experiment(tuple(rows), seeds, 2 if quick else 250)
  if name == "table6":
    rows = []
    for placement in ("interleaved", "start"):
      for count in TABLE6_CROSS_ATTENDS:
        rows.append(
          Row(
            f"{placement}_{count}",
            "",
            overrides=(
              ("config.model.num_blocks", "8"),
              ("config.model.num_self_attends_per_block", "1"),
              ("config.model.num_cross_attends", str(count)),
              ("config.model.cross_attend_placement", placement),
            ),
            labels=(("placement", placement), ("cross-attends", str(count))),
          )
        )
    return Experiment(tuple(rows), (0,), 2 if quick else 600)
  if name == "table7":
    rows = []
    for shared in (True, False):
      rows.append(
        Row(
          "shared" if shared else "not_shared",
          "",
          overrides=(
            ("config.model.num_blocks", "4"),
            ("config.model.num_self_attends_per_block", "2"),
            ("config.model.num_cross_attends", "4"),
            ("config.model.share_cross_attend_weights", str(shared)),
            ("config.model.share_latent_block_weights", str(shared)),
          ),
          labels=(("weights", "shared" if shared else "not shared"),),
        )
      )
    return Experiment(tuple(rows), seeds, 2 if quick else 600)
  if name == "attention":
    row = Row("perceiver_ff", "model=fmnist_perceiver_ff", labels=(("model", "Perceiver (FF)"),))
    return Experiment((row,), (0,), 2 if quick else 250)
  raise ValueError(f"unknown experiment {name!r}; expected one of {sorted(FOLDERS)}")


def _budget_flags(steps: int, data_dir: str | None) -> list[str]:
  flags_ = [
    f"--config.total_steps={steps}",
    f"--config.eval_every_steps={steps}",  # the whole test set once, at the end
    f"--config.checkpoint_every_steps={max(steps // 2, 1)}",
    f"--config.log_every_steps={max(steps // 10, 1)}",
  ]
  if data_dir:
    flags_.append(f"--config.data.data_dir={data_dir}")
  return flags_


def seed_points(exp: Experiment) -> list[dict[str, str]]:
  return [{"config.seed": str(seed)} for seed in exp.seeds]


def run_dirs(runs_dir: str, exp: Experiment, row: Row) -> list[str]:
  points = seed_points(exp)
  return [os.path.join(runs_dir, row.name, sweep.point_dirname(i, p)) for i, p in enumerate(points)]


def train(runs_dir: str, exp: Experiment, data_dir: str | None) -> list[str]:
  """Runs (or resumes, or skips) every run of the experiment; returns the failed run dirs."""
  failed = []
  for row in exp.rows:
    row_dir = os.path.join(runs_dir, row.name)
    extras = _budget_flags(exp.steps, data_dir) + [f"--{k}={v}" for k, v in row.overrides]
    statuses = sweep.run_sweep(row.config, row_dir, seed_points(exp), extras)
    dirs = run_dirs(runs_dir, exp, row)
    failed += [d for d, s in zip(dirs, statuses, strict=True) if not s.startswith("ok")]
  return failed


def model_config(row: Row):
  """The `config.model` the row's runs train (to count parameters and FLOPs)."""
  import importlib

  import ml_collections

  config = importlib.import_module("configs.fashion_mnist").get_config(row.config_arg or None)
  for key, value in row.overrides:
    node, field = config, key.split(".")[1:]
    for part in field[:-1]:
      node = node[part]
    old = node[field[-1]]
    node[field[-1]] = value == "True" if isinstance(old, bool) else type(old)(value)
  assert isinstance(config, ml_collections.ConfigDict)
  return config.model


@functools.cache
def size_and_flops(row: Row) -> tuple[int, float]:
  """(parameters, forward FLOPs per example from XLA's cost analysis; a multiply-add is 2).

  The same for every seed of a row, so computed once per row.
  """
  import jax

  from perceiver_jax import model

  cfg = model_config(row)
  forward = model.build_model(cfg)
  images = model.dummy_inputs(cfg, 1)
  params, state = model.param_shapes(cfg)  # shapes only: nothing is initialised
  compiled = (
    jax.jit(lambda p, s, x: forward.apply(p, s, None, x, is_training=False)[0])
    .lower(params, state, images)
    .compile()
  )
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list | tuple) else cost
  return model.count_params(params), float(cost["flops"])


def train_accuracy(run_dir: str, row: Row, data_dir: str | None, limit: int = 10_000) -> float:
  """Top-1 of the run's final parameters on the first `limit` training images."""
  import jax
  import numpy as np

  from perceiver_jax import checkpointing
  from perceiver_jax import losses
  from perceiver_jax.data import datasets
  from perceiver_jax.data import fashion_mnist

  forward, params, state = checkpointing.load_trained_model(run_dir, model_config(row))
  images, labels = fashion_mnist.load_split("train", data_dir)
  images, labels = images[:limit], labels[:limit]
  apply = jax.jit(lambda p, s, x: forward.apply(p, s, None, x, is_training=False)[0])
  correct = 0.0
  for start in range(0, len(labels), 500):
    logits = apply(params, state, datasets.normalize_fashion_mnist(images[start : start + 500]))
    correct += float(np.sum(losses.topk_correct(logits, labels[start : start + 500], 1)))
  return correct / len(labels)


def _mean_std(values: list[float]) -> str:
  values = [100 * v for v in values if v is not None]
  if not values:
    return ""
  if len(values) == 1:
    return f"{values[0]:.1f}"
  return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def _markdown(rows: list[list[str]]) -> str:
  lines = ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
  lines.insert(1, "|" + "---|" * len(rows[0]))
  return "\n".join(lines) + "\n"


def _csv(rows: list[list]) -> str:
  out = io.StringIO()
  csv.writer(out, lineterminator="\n").writerows(rows)
  return out.getvalue()


def collect(runs_dir: str, exp: Experiment) -> list[dict]:
  """One record per run: the row's labels, seed, final metrics and training seconds."""
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


def _run_csv(records: list[dict], extra: dict | None = None) -> str:
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
  return _csv(rows)


def _bar_plot(path: str, groups: list[str], series: dict[str, list[tuple[float, float]]], title):
  """Grouped bars with error bars: `series` maps a legend label to (mean, std) per group."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import numpy as np

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


def _stats(values: list[float | None]) -> tuple[float, float]:
  values = [100 * v for v in values if v is not None]
  if not values:
    return 0.0, 0.0
  return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def report_table2(records: list[dict], out: str, exp: Experiment) -> str:
  by = {}
  for r in records:
    labels = dict(r["row"].labels)
    by.setdefault(labels["model"], {}).setdefault(labels["inputs"], []).append(r["top1"])
  table = [["model", "raw", "permuted", "change", "paper model", "paper raw -> permuted"]]
  for label, _ in TABLE2_MODELS:
    raw, perm = by[label]["raw"], by[label]["permuted"]
    change = _stats(perm)[0] - _stats(raw)[0]
    paper, p_raw, p_perm = TABLE2_PAPER[label]
    table.append(
      [label, _mean_std(raw), _mean_std(perm), f"{change:+.1f}", paper, f"{p_raw} -> {p_perm}"]
    )
  groups = [label for label, _ in TABLE2_MODELS]
  _bar_plot(
    os.path.join(out, "plot.png"),
    groups,
    {
      "raw pixels": [_stats(by[g]["raw"]) for g in groups],
      "permuted pixels": [_stats(by[g]["permuted"]) for g in groups],
    },
    f"Fashion-MNIST, {exp.steps} steps, mean ± std over {len(exp.seeds)} seed(s)",
  )
  metrics.atomic_write_text(os.path.join(out, "results.csv"), _run_csv(records))
  return _markdown(table)


def report_table6(records, out, exp, extra) -> str:
  table = [["placement", "cross-attends", "test top-1", "train top-1", "parameters", "MFLOPs"]]
  for r in records:
    labels = dict(r["row"].labels)
    more = extra[r["run_dir"]]
    table.append(
      [
        labels["placement"],
        labels["cross-attends"],
        _mean_std([r["top1"]]),
        _mean_std([more["train_top1"]]),
        f"{more['parameters']:,}",
        f"{more['flops'] / 1e6:.1f}",
      ]
    )
  counts = [str(c) for c in TABLE6_CROSS_ATTENDS]
  series = {}
  for placement in ("interleaved", "start"):
    values = []
    for count in counts:
      match = [
        r["top1"]
        for r in records
        if dict(r["row"].labels) == {"placement": placement, "cross-attends": count}
      ]
      values.append(_stats(match))
    series[placement] = values
  _bar_plot(
    os.path.join(out, "plot.png"),
    [f"{c} cross-attend{'s' if c != '1' else ''}" for c in counts],
    series,
    f"Fashion-MNIST, 8 self-attends, {exp.steps} steps",
  )
  metrics.atomic_write_text(os.path.join(out, "results.csv"), _run_csv(records, extra))
  paper = [["placement", *[f"{c} cross-attends" for c in counts]]]
  for placement, values in TABLE6_PAPER.items():
    paper.append([placement, *[str(v) for v in values]])
  return _markdown(table) + "\nThe paper (ImageNet top-1, Table 6):\n\n" + _markdown(paper)


def report_table7(records, out, exp, extra) -> str:
  table = [["weights", "test top-1", "train top-1", "parameters", "MFLOPs", "paper (ImageNet)"]]
  groups = []
  series = []
  for row in exp.rows:
    runs = [r for r in records if r["row"] == row]
    label = dict(row.labels)["weights"]
    more = [extra[r["run_dir"]] for r in runs]
    paper_top1, paper_params = TABLE7_PAPER[label]
    table.append(
      [
        label,
        _mean_std([r["top1"] for r in runs]),
        _mean_std([m["train_top1"] for m in more]),
        f"{more[0]['parameters']:,}",
        f"{more[0]['flops'] / 1e6:.1f}",
        f"{paper_top1} ({paper_params} parameters)",
      ]
    )
    groups.append(label)
    series.append(_stats([r["top1"] for r in runs]))
  _bar_plot(
    os.path.join(out, "plot.png"),
    groups,
    {"test top-1": series},
    f"Fashion-MNIST, 4 cross-attends, 4 x 2 self-attends, {exp.steps} steps",
  )
  metrics.atomic_write_text(os.path.join(out, "results.csv"), _run_csv(records, extra))
  return _markdown(table)


def report_attention(records, out, data_dir: str | None, num_images: int) -> str:
  from perceiver_jax.tools import attention_maps

  record = records[0]
  files = attention_maps.plot_run(
    record["run_dir"], model_config(record["row"]), out, data_dir=data_dir, num_images=num_images
  )
  lines = [f"- `{os.path.basename(f)}`" for f in files]
  return (
    f"Model: Perceiver (FF) on 784 pixels, test top-1 {_mean_std([record['top1']])}.\n\n"
    + "\n".join(lines)
    + "\n"
  )


def _define_flags():
  flags.DEFINE_bool("quick", False, "A smoke test: 2 steps per run, one seed.")
  flags.DEFINE_string("runs_dir", "workdirs/reproduce", "Where the training runs go.")
  flags.DEFINE_string("out_dir", "experiments", "Where results.md/csv and plots go.")
  flags.DEFINE_string("data_dir", None, "Fashion-MNIST IDX files (default: the trainer's).")
  flags.DEFINE_integer("attention_images", 4, "attention: test images to plot.")


def main(argv):
  if len(argv) != 2 or argv[1] not in FOLDERS:
    sys.exit(f"usage: reproduce.py {{{'|'.join(FOLDERS)}}} [--quick] (got {argv[1:]})")
  name, args = argv[1], flags.FLAGS
  exp = experiment(name, args.quick)
  runs_dir = os.path.join(args.runs_dir, name + ("_quick" if args.quick else ""))
  out = os.path.join(args.out_dir, FOLDERS[name])
  started = time.monotonic()
  failed = train(runs_dir, exp, args.data_dir)
  if failed:
    sys.exit(f"error: {len(failed)} run(s) failed, e.g. {failed[0]}; rerun to resume them")
  os.makedirs(out, exist_ok=True)
  records = collect(runs_dir, exp)
  extra = {}
  if name in ("table6", "table7"):
    for r in records:
      parameters, flops = size_and_flops(r["row"])
      extra[r["run_dir"]] = dict(
        parameters=parameters,
        flops=flops,
        train_top1=train_accuracy(r["run_dir"], r["row"], args.data_dir),
      )
  if name == "table2":
    body = report_table2(records, out, exp)
  elif name == "table6":
    body = report_table6(records, out, exp, extra)
  elif name == "table7":
    body = report_table7(records, out, exp, extra)
  else:
    body = report_attention(records, out, args.data_dir, args.attention_images)
  train_seconds = sum(r["seconds"] or 0.0 for r in records)
  header = (
    f"# {name}{' (quick)' if args.quick else ''}\n\n"
    f"Command: `python scripts/reproduce.py {name}{' --quick' if args.quick else ''}`. "
    f"{len(records)} run(s) of {exp.steps} steps; training loops "
    f"{metrics.format_duration(train_seconds)} in all; this invocation took "
    f"{metrics.format_duration(time.monotonic() - started)} (finished runs are not rerun).\n\n"
  )
  metrics.atomic_write_text(os.path.join(out, "results.md"), header + body)
  if name == "attention":
    metrics.atomic_write_text(os.path.join(out, "results.csv"), _run_csv(records))
  print(header + body, end="")
  print(json.dumps({"out": out, "runs": len(records)}))


if __name__ == "__main__":
  _define_flags()
  app.run(main)
