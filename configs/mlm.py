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

The paper pretrains on a mixture of 70% C4 and 30% English Wikipedia: the TFDS datasets
`c4/en:3.1.0` and `wikipedia/20230601.en` prepared in array_record (`tfds build ...
--file_format=array_record`), read by `perceiver_jax/data/text_tfds.py` with the same examples
and masking, evaluated on C4's validation split (English Wikipedia has only a train split):

  python -m perceiver_jax.main --config=configs/mlm.py --config.data.name=text_tfds \
      --config.data.tfds_data_dir=~/tensorflow_datasets --workdir=workdirs/mlm

Other sources or weights: `--config.data.tfds_sources="(('c4/en:3.1.0', 0.5, 'text'),
('wikipedia/20230601.en', 0.5, 'text'))"` (name, weight, text feature), and
`--config.data.tfds_eval="('c4/en:3.1.0', 'validation', 'text')"` (name, split, feature).

Arguments (`--config=configs/mlm.py:runlocal`):
  runlocal   the `mlm_testing` model (64-byte inputs), batch 8, 20 steps: a smoke test.
  mini       the miniature pretraining run of `experiments/mlm_bytes/` (2 CPU cores): 256-byte
             inputs, 64 x 128 latents, 4 self-attends, single-byte masking, batch 32, AdamW,
             12,000 steps.

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
    # Whole-word masking (the paper's; "byte" masks single bytes): the fraction of words
    # predicted, and how their bytes are replaced.
    mask_unit="word",
    mask_rate=0.15,
    mask_token_fraction=0.8,
    random_byte_fraction=0.1,
    # name="text_tfds": TFDS text datasets in array_record, (name, weight, text feature) each,
    # mixed by weight; evaluated on `tfds_eval` = (name, split, feature), its first
    # `tfds_num_eval_examples` examples (0: all). tfds_data_dir "" is $TFDS_DATA_DIR or
    # ~/tensorflow_datasets.
    tfds_sources=(("c4/en:3.1.0", 0.7, "text"), ("wikipedia/20230601.en", 0.3, "text")),
    tfds_train_split="train",
    tfds_eval=("c4/en:3.1.0", "validation", "text"),
    tfds_num_eval_examples=0,
    tfds_data_dir="",
  )
  config.batch_size = 2048
  config.eval_batch_size = 256
  config.total_steps = 500_000
  config.eval_every_steps = 10_000
  config.checkpoint_every_steps = 5_000
  common.lamb_warmup_cosine(config, learning_rate=0.00125, warmup_steps=1_000)
  if arg.runlocal:
    config.variant = "mlm_testing"
    config.model = registry.get_model_config("mlm_testing")
    common.tiny_language_run(config)
  if arg.mini:
    config.variant = "mlm_mini"
    config.model = registry.get_model_config("mlm_mini")
    config.data.docs_per_example = 2
    # Single bytes, not whole words: a model this small predicts bytes from their neighbours,
    # not words from their context (experiments/mlm_bytes/README.md).
    config.data.mask_unit = "byte"
    config.batch_size = 32
    config.eval_batch_size = 128
    config.total_steps = 12_000
    config.log_every_steps = 50
    config.eval_every_steps = 250
    config.checkpoint_every_steps = 500
    config.optimizer.name = "adamw"
    config.optimizer.learning_rate = 0.002
    config.optimizer.warmup_steps = 200
    config.optimizer.weight_decay = 0.01
  return config
