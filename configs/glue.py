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
  task       cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte or wnli; or custom, a classification
             set of one's own in GLUE's layout, DATA_DIR/<custom.directory>/{train,dev,test}.tsv,
             described by `config.data.custom` (`perceiver_jax/data/glue.custom_task`); metric
             accuracy. Its class count is the model's: give both, e.g.
             --config.data.custom.labels="('neg', 'pos')" --config.model.num_classes=2.
  runlocal   the `mlm_testing`-sized model (64-byte inputs), batch 8, 20 steps: a smoke test.
  mini       the model of `configs/mlm.py:mini` (256-byte inputs, 64 x 128 latents) with this
             decoder, so that its pretraining checkpoint loads (`experiments/mlm_bytes/`);
             AdamW lr 3e-4, batch 32, 2,000 steps (`experiments/wordnet_supersenses/`).
"""

from __future__ import annotations

import ml_collections

from configs import common
from configs import mlm
from perceiver_jax import registry
from perceiver_jax import tasks
from perceiver_jax.data import glue


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(arg, task="sst2", runlocal=False, mini=False)
  custom = arg.task == glue.CUSTOM
  # A custom task's labels come with the command line; 2 until then (make_data checks).
  task = None if custom else glue.get_task(arg.task)
  variant = "mlm_testing" if arg.runlocal else "language_perceiver_io"
  config = common.training_defaults()
  config.variant = variant
  config.model = registry.get_model_config(variant)
  if arg.mini:
    pretraining = mlm.get_config("mini")
    config.variant, config.model = pretraining.variant, pretraining.model
  config.model.decoder.type = "sentence"
  config.model.num_classes = 2 if custom else task.num_outputs
  config.task = tasks.default_config("glue")
  config.task.glue_task = arg.task
  config.data = dict(
    name="glue",
    data_dir="",  # holds <TASK>/train.tsv, dev.tsv, test.tsv as GLUE distributes them
    task=arg.task,
    eval_split="dev" if custom else task.dev_splits[0],
    # task=custom: DATA_DIR/<directory>/{train,dev,test}.tsv with a header line each.
    custom=dict(
      directory="",
      labels=(),  # class names in class-id order, as written in the label column
      text_columns=("sentence",),  # or two, a sentence pair
      label_column="label",
      index_column="index",  # test.tsv's example ids
    ),
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
  common.lamb_warmup_cosine(config, learning_rate=5e-5, warmup_steps=200)
  if arg.runlocal:
    common.tiny_language_run(config)
  if arg.mini:
    # About 10 minutes on 2 CPU cores. A 0.6M-parameter model: LAMB's 5e-5, made for the
    # 200M release, barely moves it; 3e-4 (not tuned) is in the range used for small BERTs.
    config.total_steps = 2_000
    config.eval_batch_size = 128
    config.eval_every_steps = 1_000
    config.checkpoint_every_steps = 1_000
    config.optimizer.name = "adamw"
    config.optimizer.learning_rate = 3e-4
    config.optimizer.warmup_steps = 100
  return config
