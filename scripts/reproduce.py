"""Reproduces the Perceiver paper's findings in miniature on Fashion-MNIST.

  python scripts/reproduce.py table2      # raw vs permuted pixels, 5 models x 3 seeds
  python scripts/reproduce.py table6      # number and placement of cross-attends
  python scripts/reproduce.py table7      # weight sharing on and off
  python scripts/reproduce.py attention   # cross-attention maps of a trained Perceiver
  [--quick] [--runs_dir=workdirs/reproduce] [--out_dir=experiments] [--data_dir=DIR]

Each experiment's definition (its grid, its budget, its table) is beside its results, in
`experiments/<folder>/experiment.py`; `perceiver_jax/tools/reproduce.py` trains and reports.
Every training run is in RUNS_DIR/<experiment>/<row>/<NNN_seed=S>. Rerunning the command
skips finished runs and resumes interrupted ones from their checkpoints, then rebuilds the
tables. Results go to OUT_DIR/<folder>/: `results.md` (the table), `results.csv` (one row
per run) and a plot (PNG).
  table2     -> permuted/        the paper's Table 2
  table6     -> cross_attends/   Table 6
  table7     -> weight_sharing/  Table 7
  attention  -> attention_maps/  Fig. 3 style maps
`--quick` is a smoke test: 2 training steps per run, one seed, on whatever data `--data_dir`
points to; its results are written to OUT_DIR as well, so point that somewhere temporary.
"""

import json
import pathlib
import sys

from absl import app
from absl import flags

# The working tree's package and `experiments/`, not an install.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from perceiver_jax.tools import reproduce  # noqa: E402

_QUICK = flags.DEFINE_bool("quick", False, "A smoke test: 2 steps per run, one seed.")
_RUNS_DIR = flags.DEFINE_string("runs_dir", "workdirs/reproduce", "Where the training runs go.")
_OUT_DIR = flags.DEFINE_string("out_dir", "experiments", "Where results.md/csv and plots go.")
_DATA_DIR = flags.DEFINE_string(
  "data_dir", None, "Fashion-MNIST IDX files (default: the trainer's)."
)
_ATTENTION_IMAGES = flags.DEFINE_integer("attention_images", 4, "attention: test images to plot.")


def main(argv):
  names = reproduce.definitions()
  if len(argv) != 2 or argv[1] not in names:
    sys.exit(f"usage: reproduce.py {{{'|'.join(names)}}} [--quick] (got {argv[1:]})")
  options = reproduce.Options(
    _QUICK.value, _RUNS_DIR.value, _OUT_DIR.value, _DATA_DIR.value, _ATTENTION_IMAGES.value
  )
  try:
    print(json.dumps(reproduce.run(argv[1], options)))
  except reproduce.RunsFailed as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  app.run(main)
