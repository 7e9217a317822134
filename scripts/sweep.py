"""Runs a grid of training runs and tabulates their final metrics.

  python scripts/sweep.py --config=configs/imagenet.py:variant=testing --workdir=/tmp/sweep \
      --sweep=config.optimizer.learning_rate=1e-3,2e-3 --sweep=config.model.num_latents=64,128 \
      [--extra=--config.seed=1] [--print_only] [--rerun]

The grid is the Cartesian product of the `--sweep` values, the first `--sweep` varying slowest.
Point i runs `python -m perceiver_jax.main --config=... --workdir=DIR/<i>_<key=value...>` with
its `--config.a.b=v` overrides and the `--extra` flags. A value may hold commas inside brackets,
e.g. `config.model.image_shape=(32,32),(64,64)`.

`--print_only` prints one shell-quoted command per line (to submit to a cluster) and exits.
Otherwise the points run one after another; a failing point is recorded and the sweep goes on;
a point whose workdir holds the trainer's `final.json` (written after the last step) is skipped
unless `--rerun`, so an interrupted sweep resumes (and an interrupted point resumes from its
newest checkpoint). A point whose trainer exits 0 without `final.json` (SIGTERM: it saved a
checkpoint and stopped) is "preempted (resumable)", not finished. Then `DIR/results.md` and
`DIR/results.csv` hold one row per point: its swept values, the eval metrics the points reported
(GLUE's `eval/score`, `eval/accuracy`, ...; top-1; MLM's `eval/masked_accuracy`), the training
loss and speed, its status, and `*` on the best point: the finished point with the highest
`eval/score` (else top-1, masked accuracy, mAP; the lowest `eval/loss` if that is all there is).
`best: <point> <metric>=<value>` is printed (and ends `results.md`), e.g. the task's best dev
score over a GLUE grid, and the last line counts the points that remain.
"""

import pathlib
import sys

from absl import app
from absl import flags

# The working tree's package, not an install.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from perceiver_jax.tools import sweep  # noqa: E402

_CONFIG = flags.DEFINE_string("config", None, "Config file and argument, as for the trainer.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory that holds one workdir per point.")
_SWEEP = flags.DEFINE_multi_string("sweep", [], "`config.a.b=v1,v2,...`; repeat for a grid.")
_EXTRA = flags.DEFINE_multi_string("extra", [], "A flag passed to every run, e.g. --config.x=y.")
_PRINT_ONLY = flags.DEFINE_bool("print_only", False, "Print the commands and exit.")
_RERUN = flags.DEFINE_bool("rerun", False, "Also run points that have already finished.")


def main(argv):
  if len(argv) > 1:
    sys.exit(f"error: unexpected arguments {argv[1:]}")
  if not _CONFIG.value or not _WORKDIR.value:
    sys.exit("error: --config and --workdir are required")
  try:
    sweep.run(
      _CONFIG.value,
      _WORKDIR.value,
      _SWEEP.value,
      _EXTRA.value,
      print_only=_PRINT_ONLY.value,
      rerun=_RERUN.value,
    )
  except ValueError as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  app.run(main)
