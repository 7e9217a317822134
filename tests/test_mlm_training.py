"""Masked-language-model pretraining end to end: `python -m perceiver_jax.main
--config=configs/mlm.py:runlocal` for 2 steps on plain text files, bad files included."""

import json
import math
import pathlib

import main_runner

from configs import mlm

# Real English prose that every Debian system ships (package base-files).
LICENSES = pathlib.Path("/usr/share/common-licenses")
FALLBACK = (
  "The quick brown fox jumps over the lazy dog.\n"
  "A byte model reads text without a tokenizer, one UTF-8 byte at a time.\n"
  "Whole words are hidden and the model predicts every byte of each.\n"
) * 40


def _write_text_files(root: pathlib.Path) -> pathlib.Path:
  for split, name in (("train", "GPL-3"), ("eval", "Apache-2.0")):
    (root / split).mkdir(parents=True)
    source = LICENSES / name
    text = source.read_text(encoding="utf-8") if source.exists() else FALLBACK
    (root / split / "prose.txt").write_text(text, encoding="utf-8")
  (root / "train" / "empty.txt").write_bytes(b"")
  (root / "train" / "latin1.txt").write_bytes(b"caf\xe9 au lait\nplain line\n")
  return root


def test_config_is_the_paper_recipe():
  config = mlm.get_config()
  assert (config.task.name, config.data.name) == ("masked_lm", "text")
  assert (config.data.docs_per_example, config.data.mask_rate) == (10, 0.15)
  assert config.batch_size == 2048 and config.total_steps == 500_000
  opt = config.optimizer
  assert (opt.name, opt.learning_rate, opt.scale_lr_by_batch) == ("lamb", 0.00125, False)
  assert (opt.schedule, opt.warmup_steps, opt.weight_decay) == ("warmup_cosine", 1000, 0.01)
  local = mlm.get_config("runlocal")
  assert local.model.input_shape == (64,) and local.batch_size == 8


def test_pretraining_runs_two_steps(tmp_path):
  data_dir = _write_text_files(tmp_path / "text")
  result = main_runner.run_main(
    "mlm.py:runlocal",
    tmp_path / "workdir",
    f"--config.data.data_dir={data_dir}",
    "--config.total_steps=2",
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert "'empty_files': 1" in result.stderr and "'invalid_utf8': 1" in result.stderr
  records = [json.loads(line) for line in (tmp_path / "workdir" / "metrics.jsonl").open()]
  train = next(r for r in records if "train/loss" in r)
  evaluation = next(r for r in records if "eval/loss" in r)
  assert math.isfinite(train["train/loss"]) and 0 <= train["train/masked_accuracy"] <= 1
  assert math.isfinite(evaluation["eval/loss"]) and evaluation["eval/count"] > 0
