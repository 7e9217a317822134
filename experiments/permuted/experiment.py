"""Table 2 in miniature: raw vs permuted pixels, 5 models x 3 seeds (`scripts/reproduce.py
table2`). Every model gets the same 784 pixels + 8-band Fourier features."""

import os

from perceiver_jax.tools import reproduce

NAME = "table2"
# (label, registry variant).
MODELS = (
  ("ConvNet (FF)", "fmnist_convnet_ff"),
  ("ViT (FF)", "fmnist_vit_ff"),
  ("Transformer (FF)", "fmnist_transformer_ff"),
  ("Perceiver (FF)", "fmnist_perceiver_ff"),
  ("Perceiver (learned pos.)", "fmnist_perceiver_learned"),
)
# The paper's ImageNet top-1, raw -> permuted (Table 2).
PAPER = {
  "ConvNet (FF)": ("ResNet-50 (FF)", 73.5, 39.4),
  "ViT (FF)": ("ViT-B-16 (FF)", 76.7, 61.7),
  "Transformer (FF)": ("Transformer 64x64 (FF)", 57.0, 57.0),
  "Perceiver (FF)": ("Perceiver (FF)", 78.0, 78.0),
  "Perceiver (learned pos.)": ("Perceiver (learned pos.)", 70.9, 70.9),
}


def experiment(quick: bool) -> reproduce.Experiment:
  rows = []
  for label, model in MODELS:
    for permuted in (False, True):
      inputs = "permuted" if permuted else "raw"
      rows.append(
        reproduce.Row(
          f"{model}_{inputs}",
          f"model={model},permuted={permuted}",
          labels=(("model", label), ("inputs", inputs)),
        )
      )
  return reproduce.Experiment(tuple(rows), (0,) if quick else (0, 1, 2), 2 if quick else 250)


def report(records: list[dict], exp: reproduce.Experiment, out: str, options) -> str:
  del options
  by = {}
  for r in records:
    labels = dict(r["row"].labels)
    by.setdefault(labels["model"], {}).setdefault(labels["inputs"], []).append(r["top1"])
  table = [["model", "raw", "permuted", "change", "paper model", "paper raw -> permuted"]]
  for label, _ in MODELS:
    raw, perm = by[label]["raw"], by[label]["permuted"]
    change = reproduce.stats(perm)[0] - reproduce.stats(raw)[0]
    paper, p_raw, p_perm = PAPER[label]
    table.append(
      [
        label,
        reproduce.mean_std(raw),
        reproduce.mean_std(perm),
        f"{change:+.1f}",
        paper,
        f"{p_raw} -> {p_perm}",
      ]
    )
  groups = [label for label, _ in MODELS]
  reproduce.bar_plot(
    os.path.join(out, "plot.png"),
    groups,
    {
      "raw pixels": [reproduce.stats(by[g]["raw"]) for g in groups],
      "permuted pixels": [reproduce.stats(by[g]["permuted"]) for g in groups],
    },
    f"Fashion-MNIST, {exp.steps} steps, mean ± std over {len(exp.seeds)} seed(s)",
  )
  reproduce.write_run_csv(out, records)
  return reproduce.markdown(table)
