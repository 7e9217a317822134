"""Fig. 3 style cross-attention maps of a trained Perceiver (FF) on Fashion-MNIST
(`scripts/reproduce.py attention [--attention_images=4]`)."""

import os

from perceiver_jax.tools import attention_maps
from perceiver_jax.tools import reproduce

NAME = "attention"


def experiment(quick: bool) -> reproduce.Experiment:
  row = reproduce.Row(
    "perceiver_ff", "model=fmnist_perceiver_ff", labels=(("model", "Perceiver (FF)"),)
  )
  return reproduce.Experiment((row,), (0,), 2 if quick else 250)


def report(records: list[dict], exp: reproduce.Experiment, out: str, options) -> str:
  del exp
  record = records[0]
  files = attention_maps.plot_run(
    record["run_dir"],
    reproduce.config(record["row"]).model,
    out,
    data_dir=options.data_dir,
    num_images=options.attention_images,
  )
  reproduce.write_run_csv(out, records)
  lines = [f"- `{os.path.basename(f)}`" for f in files]
  return (
    f"Model: Perceiver (FF) on 784 pixels, test top-1 {reproduce.mean_std([record['top1']])}.\n\n"
    + "\n".join(lines)
    + "\n"
  )
