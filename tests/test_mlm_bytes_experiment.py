"""experiments/mlm_bytes/: the `configs/mlm.py:mini` model, the prose filter of
prepare_text.py and the unigram baselines of analyze.py."""

import importlib.util
import pathlib

import numpy as np

from configs import mlm
from perceiver_jax import model
from perceiver_jax.data import bytes_tokenizer as bt

EXPERIMENT = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "mlm_bytes"


def _load(name):
  spec = importlib.util.spec_from_file_location(f"mlm_bytes_{name}", EXPERIMENT / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_mini_config_is_the_experiments_model():
  config = mlm.get_config("mini")
  assert config.model.modality == "text" and config.model.input_shape == (256,)
  params, _ = model.param_shapes(config.model)
  assert model.count_params(params) == 606_470


def test_prose_paragraphs_drop_code_and_headings():
  prepare = _load("prepare_text")
  topic = (
    "Title\n*****\n\nAn assignment statement evaluates the expression list\nand assigns it.\n\n"
    "   x = 1\n   y = 2\n\nShort one.\n"
  )
  assert prepare.prose_paragraphs(topic) == [
    "An assignment statement evaluates the expression list and assigns it."
  ]
  train, held = prepare.split_topics({f"t{i:02d}": "" for i in range(20)})
  assert held == ["t03", "t09", "t15"] and len(train) == 17


def test_unigram_scores():
  analyze = _load("analyze")
  counts = np.zeros(bt.VOCAB_SIZE)
  counts[bt.OFFSET + ord("e")] = 3.0
  counts[bt.OFFSET + ord("t")] = 1.0
  ids = np.array([ord("e"), ord("e"), ord("t"), ord("a")]) + bt.OFFSET
  scores = analyze.unigram_scores(counts, ids)
  probs = (counts + 1) / (counts.sum() + bt.VOCAB_SIZE)
  assert scores["argmax_accuracy"] == 0.5 and scores["argmax_byte"] == "e"
  np.testing.assert_allclose(scores["sampled_accuracy"], np.mean(probs[ids]))
  np.testing.assert_allclose(scores["loss"], -np.mean(np.log(probs[ids])))
