"""Table 7 in miniature: weight sharing on and off (`scripts/reproduce.py table7`). The
default experiment's Perceiver with 4 cross-attends and 4 blocks of 2 self-attends."""

import os

from perceiver_jax.tools import reproduce

NAME = "table7"
# The paper's ImageNet top-1 and parameters (Table 7).
PAPER = {"shared": (78.0, "44.9M"), "not shared": (72.9, "326.2M")}


def experiment(quick: bool) -> reproduce.Experiment:
  rows = []
  for shared in (True, False):
    rows.append(
      reproduce.Row(
        "shared" if shared else "not_shared",
        "",
        overrides=(
          ("model.num_blocks", 4),
          ("model.num_self_attends_per_block", 2),
          ("model.num_cross_attends", 4),
          ("model.share_cross_attend_weights", shared),
          ("model.share_latent_block_weights", shared),
        ),
        labels=(("weights", "shared" if shared else "not shared"),),
      )
    )
  return reproduce.Experiment(tuple(rows), (0,) if quick else (0, 1, 2), 2 if quick else 600)


def report(records: list[dict], exp: reproduce.Experiment, out: str, options) -> str:
  extra = reproduce.size_and_train_accuracy(records, options.data_dir)
  table = [["weights", "test top-1", "train top-1", "parameters", "MFLOPs", "paper (ImageNet)"]]
  groups, series = [], []
  for row in exp.rows:
    runs = [r for r in records if r["row"] == row]
    label = dict(row.labels)["weights"]
    more = [extra[r["run_dir"]] for r in runs]
    paper_top1, paper_params = PAPER[label]
    table.append(
      [
        label,
        reproduce.mean_std([r["top1"] for r in runs]),
        reproduce.mean_std([m["train_top1"] for m in more]),
        f"{more[0]['parameters']:,}",
        f"{more[0]['flops'] / 1e6:.1f}",
        f"{paper_top1} ({paper_params} parameters)",
      ]
    )
    groups.append(label)
    series.append(reproduce.stats([r["top1"] for r in runs]))
  reproduce.bar_plot(
    os.path.join(out, "plot.png"),
    groups,
    {"test top-1": series},
    f"Fashion-MNIST, 4 cross-attends, 4 x 2 self-attends, {exp.steps} steps",
  )
  reproduce.write_run_csv(out, records, extra)
  return reproduce.markdown(table)
