"""Masked language modelling on UTF-8 bytes with Perceiver IO (paper Section 4.1).

  python -m perceiver_jax.main --config=configs/mlm.py \
      --config.data.data_dir=/data/text --workdir=workdirs/mlm

Data (`perceiver_jax/data/text.py`): plain UTF-8 text files, DATA_DIR/train/* and
DATA_DIR/eval/* (or the explicit lists `train_files`, `eval_files`), one document per line
(`one_document_per=line`) or per file (`=file`). A training example concatenates
`docs_per_example` consecutive documents of the epoch's shuffled order, each followed by SEP,
crops a random window of the model's input length (2,048 bytes) and pads it with PAD; 15% of
its words (runs of non-space bytes) are chosen for prediction, their bytes replaced by MASK
(80%), a random byte (10%) or kept (10%), as BERT does.

The paper pretrains on a mixture of 70% C4 and 30% English Wikipedia. Reading them through TFDS
is not implemented yet: export both as text files (one document per line) and give them as
`train_files`, repeating the C4 files in the list to weigh the mixture.

Arguments (`--config=configs/mlm.py:runlocal`):
  runlocal   the `mlm_testing` model (64-byte inputs), batch 8, 20 steps: a smoke test.
  mini       the miniature pretraining run of `experiments/mlm_bytes/` (2 CPU cores): 256-byte
             inputs, 64 x 128 latents, 4 self-attends, batch 32, AdamW, 3,000 steps.

Model (`registry.language_perceiver_io`): the released byte model, 201,108,230 parameters.
Recipe (paper): LAMB, lr 0.00125 (not scaled by batch), 1,000 linear warm-up steps then cosine
decay to 0 at 500k steps, weight decay 0.01, batch 2,048. Metrics: `train/loss` and
`train/masked_accuracy` over the predicted bytes, the same on the held-out split.
"""

from __future__ import annotations

import ml_collections

from configs import common
from perceiver_jax import registry
from perceiver_jax import tasks


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(arg, runlocal=False, mini=False)
  config = common.training_defaults()
  config.variant = "language_perceiver_io"
  config.model = registry.get_model_config("language_perceiver_io")
  config.task = tasks.default_config("masked_lm")
  config.data = dict(
    name="text",
    # DATA_DIR/train/* and DATA_DIR/eval/*, used when the file lists below are empty.
    data_dir="",
    train_files=(),
    eval_files=(),
    one_document_per="line",  # or "file"
    docs_per_example=10,
    # Whole-word masking: the fraction of words predicted, and how their bytes are replaced.
    mask_rate=0.15,
    mask_token_fraction=0.8,
    random_byte_fraction=0.1,
  )
  config.batch_size = 2048
  config.eval_batch_size = 256
  config.total_steps = 500_000
  config.eval_every_steps = 10_000
  config.checkpoint_every_steps = 5_000
  config.optimizer.name = "lamb"
  config.optimizer.learning_rate = 0.00125
  config.optimizer.scale_lr_by_batch = False
  config.optimizer.schedule = "warmup_cosine"
  config.optimizer.warmup_steps = 1_000
  config.optimizer.weight_decay = 0.01
  if arg.runlocal:
    config.variant = "mlm_testing"
    config.model = registry.get_model_config("mlm_testing")
    config.total_steps = 20
    config.log_every_steps = 5
    config.eval_every_steps = 20
    config.checkpoint_every_steps = 10
    config.batch_size = 8
    config.eval_batch_size = 8
    config.optimizer.warmup_steps = 1
  if arg.mini:
    config.variant = "mlm_testing"
    config.model = registry.get_model_config("mlm_testing")
    config.model.input_shape = (256,)
    config.model.text.embed_dim = 128
    config.model.num_latents = 64
    for name in ("num_latent_channels", "cross_attend_v_channels", "self_attend_v_channels"):
      config.model[name] = 128
    config.model.num_self_attends_per_block = 4
    config.model.cross_attend_qk_channels = 64
    config.model.self_attend_qk_channels = 64
    config.model.decoder.qk_channels = 64
    config.data.docs_per_example = 2
    config.batch_size = 32
    config.eval_batch_size = 128
    config.total_steps = 3_000
    config.log_every_steps = 50
    config.eval_every_steps = 250
    config.checkpoint_every_steps = 500
    config.optimizer.name = "adamw"
    config.optimizer.learning_rate = 0.001
    config.optimizer.warmup_steps = 200
    config.optimizer.weight_decay = 0.01
  return config
