"""experiments/mlm_bytes/: the `configs/mlm.py:mini` model, the prose filter of
prepare_text.py and the unigram baselines of analyze.py."""

import functools
import importlib.util
import pathlib

import numpy as np
from absl import flags

from configs import mlm
from perceiver_jax import model
from perceiver_jax.data import bytes_tokenizer as bt

EXPERIMENT = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "mlm_bytes"


@functools.cache
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
  # A heading's underline goes, and the heading alone is too short to stay.
  assert prepare.prose_paragraphs("The assert statement\n====================\n") == []
  assert prepare.prose_paragraphs("Statements are *** executed in order, one after another.") == [
    "Statements are *** executed in order, one after another."
  ]


def test_docstrings_are_read_without_running_the_source():
  prepare = _load("prepare_text")
  source = (
    '"""Module text."""\n'
    "raise SystemExit('never run')\n"
    "class A:\n"
    '  """Class text."""\n'
    "  def f(self):\n"
    '    """Method text."""\n'
  )
  assert prepare.module_docstrings(source) == ["Module text.", "Class text.", "Method text."]
  assert prepare.module_docstrings("def broken(:\n") == []


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


def test_neighbour_baseline_backs_off_from_both_neighbours_to_one_to_none():
  analyze = _load("analyze")
  a, b, c, x, y = (bt.OFFSET + ord(ch) for ch in "abcxy")
  tables = analyze.neighbour_tables(np.array([a, x, b, a, x, b, a, y, b, c, y, c, y, y]))
  assert tables["both"][a, b, x] == 2 and tables["both"][a, b, y] == 1
  assert tables["left"][c, y] == 2 and tables["right"][x, a] == 1 and tables["none"][y] == 4
  m = bt.MASK
  inputs = np.array([[a, m, b, c, m, m, x, x, b, m, m, m]])
  guess = analyze.neighbour_predictions(tables, inputs)
  assert guess[0, 1] == x  # between a and b: x twice, y once
  assert guess[0, 4] == y  # left c (then y twice), right masked
  assert guess[0, 5] == a  # left masked, right x (after a once)
  assert guess[0, 7] == b  # x _ b never seen: left x (then b twice)
  assert guess[0, 10] == y  # both masked: the most frequent byte


def test_scripts_import_next_to_modules_with_the_same_flags():
  # Other modules of a test process (e.g. perceiver_jax.main) define the scripts' flag names.
  for flag in ("workdir", "data_dir", "out"):
    if flag not in flags.FLAGS:
      flags.DEFINE_string(flag, None, "as another module defines it")
  for name in ("analyze", "prepare_text"):
    spec = importlib.util.spec_from_file_location(f"again_{name}", EXPERIMENT / f"{name}.py")
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
