"""Table 6 in miniature: the number and placement of cross-attends (`scripts/reproduce.py
table6`). The default experiment's Perceiver (49 patches of 4x4) at a fixed depth of 8
self-attends (8 blocks of 1)."""

import os

from perceiver_jax.tools import reproduce

NAME = "table6"
CROSS_ATTENDS = (1, 2, 4, 8)
PLACEMENTS = ("interleaved", "start")
# The paper's ImageNet top-1 per number of cross-attends (Table 6).
PAPER = {"interleaved": (76.7, 76.5, 76.5, 78.0), "start": (76.7, 76.7, 75.9, 73.7)}


def experiment(quick: bool) -> reproduce.Experiment:
  rows = []
  for placement in PLACEMENTS:
    for count in CROSS_ATTENDS:
      rows.append(
        reproduce.Row(
          f"{placement}_{count}",
          "",
          overrides=(
            ("model.num_blocks", 8),
            ("model.num_self_attends_per_block", 1),
            ("model.num_cross_attends", count),
            ("model.cross_attend_placement", placement),
          ),
          labels=(("placement", placement), ("cross-attends", str(count))),
        )
      )
  return reproduce.Experiment(tuple(rows), (0,), 2 if quick else 600)


def report(records: list[dict], exp: reproduce.Experiment, out: str, options) -> str:
  extra = reproduce.size_and_train_accuracy(records, options.data_dir)
  table = [["placement", "cross-attends", "test top-1", "train top-1", "parameters", "MFLOPs"]]
  for r in records:
    labels = dict(r["row"].labels)
    more = extra[r["run_dir"]]
    table.append(
      [
        labels["placement"],
        labels["cross-attends"],
        reproduce.mean_std([r["top1"]]),
        reproduce.mean_std([more["train_top1"]]),
        f"{more['parameters']:,}",
        f"{more['flops'] / 1e6:.1f}",
      ]
    )
  counts = [str(c) for c in CROSS_ATTENDS]
  series = {}
  for placement in PLACEMENTS:
    series[placement] = [
      reproduce.stats(
        [
          r["top1"]
          for r in records
          if dict(r["row"].labels) == {"placement": placement, "cross-attends": count}
        ]
      )
      for count in counts
    ]
  reproduce.bar_plot(
    os.path.join(out, "plot.png"),
    [f"{c} cross-attend{'s' if c != '1' else ''}" for c in counts],
    series,
    f"Fashion-MNIST, 8 self-attends, {exp.steps} steps",
  )
  reproduce.write_run_csv(out, records, extra)
  paper = [["placement", *[f"{c} cross-attends" for c in counts]]]
  for placement, values in PAPER.items():
    paper.append([placement, *[str(v) for v in values]])
  return (
    reproduce.markdown(table)
    + "\nThe paper (ImageNet top-1, Table 6):\n\n"
    + reproduce.markdown(paper)
  )
