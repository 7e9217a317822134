"""GLUE fine-tuning of the byte-level Perceiver IO language model (paper Section 4.1).

  python -m perceiver_jax.main --config=configs/glue.py:task=sst2 \
      --config.data.data_dir=/data/glue_data \
      --config.pretrained.path=workdirs/mlm/checkpoints --workdir=workdirs/glue_sst2

Data (`perceiver_jax/data/glue.py`): GLUE's distribution layout, DATA_DIR/<TASK>/train.tsv and
dev.tsv (MNLI: dev_matched.tsv, or dev_mismatched.tsv with
`--config.data.eval_split=dev_mismatched`). Each example is [CLS] s1 [SEP] (s2 [SEP]) in
bytes, cropped and padded to the model's 2,048 bytes.

Model: `registry.language_perceiver_io` with the `sentence` decoder (one query cross-attends to
the latents, then a 2-layer tanh MLP of width 768 to K classes, or to 1 score for STS-B). Its
encoder and input embedding come from `pretrained.path` (an MLM training checkpoint or an
official-format pickle; empty: train from scratch); the MLM head is dropped
(`pretrained.exclude_head`) and the sentence decoder initialised afresh (`pretrained.exclude`;
set it to () to start from a GLUE run's decoder, e.g. MNLI's for RTE, with a new output layer).

Recipe (paper): 10 epochs, LAMB, batch in {16, 32, 64} (default 32), lr in {1e-4, 5e-5,
2e-5, 1e-5} (default 5e-5), 200 linear warm-up steps, weight decay 0.01; after the warm-up
the paper names no decay, so this uses the MLM run's cosine decay to 0.
Metrics: GLUE's official ones on the dev split (`perceiver_jax/tasks/glue.py`), `eval/score`
the task's GLUE score.

Arguments (`--config=configs/glue.py:task=stsb,runlocal`):
  task       cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte or wnli.
  runlocal   the `mlm_testing`-sized model (64-byte inputs), batch 8, 20 steps: a smoke test.
"""

from __future__ import annotations

import ml_collections

from configs import common
from perceiver_jax import registry
from perceiver_jax import tasks
from perceiver_jax.data import glue


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(arg, task="sst2", runlocal=False)
  task = glue.get_task(arg.task)
  variant = "mlm_testing" if arg.runlocal else "language_perceiver_io"
  config = common.training_defaults()
  config.variant = variant
  config.model = registry.get_model_config(variant)
  config.model.decoder.type = "sentence"
  config.model.num_classes = task.num_outputs
  config.task = tasks.default_config("glue")
  config.task.glue_task = arg.task
  config.data = dict(
    name="glue",
    data_dir="",  # holds <TASK>/train.tsv, dev.tsv, test.tsv as GLUE distributes them
    task=arg.task,
    eval_split=task.dev_splits[0],
  )
  config.pretrained.path = ""  # an MLM checkpoint: set it (empty trains from scratch)
  # The whole sentence decoder is new on top of a language model (exclude_head: its output).
  config.pretrained.exclude = ("sentence_decoder",)
  config.num_epochs = 10.0
  config.batch_size = 32
  config.eval_batch_size = 64
  config.log_every_steps = 50
  config.eval_every_steps = 1000
  config.checkpoint_every_steps = 1000
  config.optimizer.name = "lamb"
  config.optimizer.learning_rate = 5e-5
  config.optimizer.scale_lr_by_batch = False
  config.optimizer.schedule = "warmup_cosine"
  config.optimizer.warmup_steps = 200
  config.optimizer.weight_decay = 0.01
  if arg.runlocal:
    config.total_steps = 20
    config.log_every_steps = 5
    config.eval_every_steps = 20
    config.checkpoint_every_steps = 10
    config.batch_size = 8
    config.eval_batch_size = 8
    config.optimizer.warmup_steps = 1
  return config
