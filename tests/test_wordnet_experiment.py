"""experiments/wordnet_supersenses/ and the custom classification task of configs/glue.py:
WordNet's data files -> GLUE-layout TSVs, the bag-of-bytes baselines, `task=custom` (its
checks, its loader, a 2-step run through `perceiver_jax.main`) and the `mini` model."""

import functools
import importlib.util
import json
import pathlib

import jax
import main_runner
import ml_collections
import numpy as np
import pytest

from configs import glue as glue_config
from configs import mlm as mlm_config
from perceiver_jax import model
from perceiver_jax import official_format
from perceiver_jax import pretrained
from perceiver_jax.data import contract
from perceiver_jax.data import glue
from perceiver_jax.tasks import glue as glue_task

EXPERIMENT = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "wordnet_supersenses"
_LICENSE = "  1 This software and database is being provided to you, the LICENSEE, by  \n"


@functools.cache
def _load(name):
  spec = importlib.util.spec_from_file_location(f"wordnet_{name}", EXPERIMENT / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _synset_line(offset: int, lex: int, pos: str, gloss: str) -> str:
  """One synset line in WordNet 3.0's data-file layout (one word, one pointer)."""
  return f"{offset:08d} {lex:02d} {pos} 01 word_{offset} 0 001 @ 00001740 {pos} 0000 | {gloss}  \n"


def _write_wordnet(folder: pathlib.Path, per_pos: int = 30) -> pathlib.Path:
  """data.{noun,verb,adj,adv} with a license header, `per_pos` synsets each and one line
  without a gloss; noun lexnames alternate noun.animal (5) / noun.plant (20)."""
  folder.mkdir(parents=True, exist_ok=True)
  lex = {"noun": (5, 20), "verb": (38,), "adj": (0,), "adv": (2,)}
  for pos, code in (("noun", "n"), ("verb", "v"), ("adj", "s"), ("adv", "r")):
    lines = [_LICENSE]
    for i in range(per_pos):
      gloss = f'{pos} meaning {i}; "an example {i}"; "another"'
      lines.append(_synset_line(1000 + 50 * i, lex[pos][i % len(lex[pos])], code, gloss))
    lines.append("00009999 05 n 01 broken 0 000\n")  # no `| gloss`
    (folder / f"data.{pos}").write_text("".join(lines))
  return folder


def test_definition_cuts_the_quoted_examples():
  prepare = _load("prepare")
  gloss = 'take a breath;  "he breathed deeply"; "breathe in"  \n'
  assert prepare.definition(gloss, keep_examples=False) == "take a breath"
  assert prepare.definition(gloss, keep_examples=True) == (
    'take a breath; "he breathed deeply"; "breathe in"'
  )
  assert prepare.definition('"only an example"', keep_examples=False) == ""
  assert prepare.definition("a \t(2-D) shape", keep_examples=False) == "a (2-D) shape"


def test_prepare_writes_glue_layout_with_a_fixed_split(tmp_path):
  prepare = _load("prepare")
  wordnet = _write_wordnet(tmp_path / "wordnet")
  splits, lexnames, skipped = prepare.build(str(wordnet))
  assert lexnames == prepare.LEXNAMES and len(lexnames) == 45
  assert lexnames[5] == "noun.animal" and lexnames[38] == "verb.motion"
  assert skipped == {"malformed": 4}
  examples = [e for split in splits.values() for e in split]
  assert len(examples) == 120 and all(len(split) for split in splits.values())
  assert ("noun meaning 0", "noun.animal") in examples
  assert ("noun meaning 1", "noun.plant") in examples
  assert ("adj meaning 3", "adj.all") in examples
  # The split depends on the synset id alone (pos letter + offset).
  assert prepare.split_of("n00001000") == splits_of(splits, "noun meaning 0")
  assert prepare.split_of("v00001000") == splits_of(splits, "verb meaning 0")
  ids = [f"n{i:08d}" for i in range(20_000)]
  shares = np.mean([[prepare.split_of(i) == s for s in prepare.SPLITS] for i in ids], axis=0)
  np.testing.assert_allclose(shares, [0.8, 0.1, 0.1], atol=0.01)
  # Files as written: GLUE's headers, the test split with an index column.
  for name, rows in splits.items():
    path = tmp_path / f"{name}.tsv"
    prepare.write_split(str(path), rows, is_test=name == "test")
    lines = path.read_text().splitlines()
    header = "index\tsentence\tlabel" if name == "test" else "sentence\tlabel"
    assert lines[0] == header and len(lines) == len(rows) + 1
  flagfile = prepare.config_flags("/data/wn", lexnames).splitlines()
  assert flagfile[-1] == "--config.model.num_classes=45"
  assert flagfile[2].startswith("--config.data.custom.labels=('adj.all', 'adj.pert'")


def splits_of(splits: dict, sentence: str) -> str:
  return next(name for name, rows in splits.items() if any(s == sentence for s, _ in rows))


def test_prepare_reads_a_lexnames_file_and_rejects_a_missing_folder(tmp_path):
  prepare = _load("prepare")
  wordnet = _write_wordnet(tmp_path / "wordnet", per_pos=2)
  (wordnet / "lexnames").write_text("00\tadj.all\t3\n01\tadj.pert\t3\n02\tadv.all\t4\n")
  splits, lexnames, skipped = prepare.build(str(wordnet))
  assert lexnames == ("adj.all", "adj.pert", "adv.all")
  # Nouns (5, 20) and verbs (38) are beyond this 3-name list.
  assert skipped == {"malformed": 4, "unknown_lexname": 4}
  assert (
    sorted(label for rows in splits.values() for _, label in rows)
    == ["adj.all"] * 2 + ["adv.all"] * 2
  )
  with pytest.raises(ValueError, match="no file data.noun"):
    prepare.build(str(tmp_path / "nothing"))


def test_byte_and_pair_features():
  baseline = _load("bag_of_bytes")
  x = baseline.byte_features(["abba", "é"])
  assert x.shape == (2, 256)
  assert x[0, ord("a")] == 0.5 and x[0, ord("b")] == 0.5 and x[0].sum() == 1.0
  np.testing.assert_allclose(x[1, [0xC3, 0xA9]], [0.5, 0.5])  # "é" is 2 UTF-8 bytes
  pairs = baseline.top_pairs(["abab", "ab", "ba"], 2)
  assert list(pairs) == [ord("a") * 256 + ord("b"), ord("b") * 256 + ord("a")]
  f = baseline.pair_features(["abab", "xy"], pairs)
  np.testing.assert_allclose(f, [[2 / 3, 1 / 3], [0, 0]])


def test_logistic_regression_learns_a_byte_rule():
  baseline = _load("bag_of_bytes")
  rng = np.random.default_rng(0)
  words = ["".join(rng.choice(list("abcdefgh"), 12)) for _ in range(300)]
  y = np.array([int(w.count("a") > w.count("b")) for w in words])
  (x,) = baseline.standardise(baseline.byte_features(words))
  params = baseline.fit(x, y, 2, l2=1e-4, max_steps=100)
  assert baseline.accuracy(params, x, y) > 0.95  # the rule is linear in the byte counts
  heavy = baseline.fit(x, y, 2, l2=10.0, max_steps=100)
  assert np.abs(heavy["w"]).max() < 0.2 * np.abs(params["w"]).max()


def _custom(**overrides) -> ml_collections.ConfigDict:
  cfg = glue_config.get_config("task=custom").data.custom
  cfg.directory, cfg.labels = "WN", ("noun.animal", "noun.plant")
  cfg.update(overrides)
  return cfg


@pytest.mark.parametrize(
  "overrides, message",
  [
    (dict(labels=()), r"config.data.custom.labels=\(\): needs at least 2"),
    (dict(labels=("a", "a")), "repeats a class name"),
    (dict(directory=""), "config.data.custom.directory=''"),
    (dict(text_columns=("a", "b", "c")), "config.data.custom.text_columns"),
    (dict(label_column=""), "config.data.custom.label_column=''"),
  ],
)
def test_custom_task_rejects_impossible_values(overrides, message):
  with pytest.raises(ValueError, match=message):
    glue.get_task("custom", _custom(**overrides))


def test_custom_task_reads_its_files_and_counts_bad_rows(tmp_path):
  task = glue.get_task("custom", _custom(labels=(0, 1)))
  assert task.labels == ("0", "1") and task.num_outputs == 2 and not glue.is_regression("custom")
  with pytest.raises(ValueError, match="needs the section config.data.custom"):
    glue.get_task("custom")
  (tmp_path / "WN").mkdir()
  rows = ["sentence\tlabel", "a cat\tnoun.animal", "an oak\tnoun.plant", "a rock\tnoun.object"]
  (tmp_path / "WN" / "dev.tsv").write_text("\n".join([*rows, "no label column"]) + "\n")
  split = glue.read_split(str(tmp_path), "custom", "dev", 16, _custom())
  assert split.labels.tolist() == [0, 1]
  assert split.skipped["unknown_label"] == 1 and split.skipped["malformed"] == 1
  test = "index\tsentence\tlabel\n7\ta cat\tnoun.animal\n"
  (tmp_path / "WN" / "test.tsv").write_text(test)
  split = glue.read_split(str(tmp_path), "custom", "test", 16, _custom())
  assert split.index == ["7"] and split.labels is None
  metrics = glue_task.split_metrics("custom", np.array([[2.0, 0.0], [3.0, 1.0]]), np.array([0, 1]))
  assert metrics["eval/accuracy"] == metrics["eval/score"] == 0.5


def test_mini_config_has_the_pretraining_encoder(tmp_path):
  config = glue_config.get_config("task=custom,mini")
  assert config.model.decoder.type == "sentence" and config.model.input_shape == (256,)
  assert (config.batch_size, config.optimizer.name) == (32, "adamw")
  config.model.num_classes = 45
  mlm = mlm_config.get_config("mini").model
  weights, _ = model.build_model(mlm).init(
    jax.random.PRNGKey(1), model.dummy_inputs(mlm), is_training=True
  )
  template, state = model.build_model(config.model).init(
    jax.random.PRNGKey(0), model.dummy_inputs(config.model), is_training=True
  )
  head = ("sentence_decoder", "basic_decoder", "embedding_decoder")

  def encoder_shapes(params):
    return {m: jax.tree.map(np.shape, p) for m, p in params.items() if not m.startswith(head)}

  assert encoder_shapes(template) == encoder_shapes(weights)
  assert any(m.startswith("sentence_decoder") for m in template)
  # A mini MLM checkpoint loads under it: every encoder weight is the checkpoint's.
  path = str(tmp_path / "mini.pkl")
  official_format.save_official_pickle(path, jax.device_get(weights), bare=True)
  loaded, _ = pretrained.load_pretrained(
    path, template, state, exclude=tuple(config.pretrained.exclude), exclude_head=True
  )
  for module in encoder_shapes(template):
    for name in loaded[module]:
      np.testing.assert_array_equal(loaded[module][name], weights[module][name])


def test_custom_task_trains_two_steps_from_the_flagfile(tmp_path):
  prepare = _load("prepare")
  splits, lexnames, _ = prepare.build(str(_write_wordnet(tmp_path / "wordnet")))
  folder = tmp_path / "out" / prepare.DIRECTORY
  folder.mkdir(parents=True)
  for name, rows in splits.items():
    prepare.write_split(str(folder / f"{name}.tsv"), rows, is_test=name == "test")
  (folder / "flags.txt").write_text(prepare.config_flags(str(tmp_path / "out"), lexnames))
  workdir = tmp_path / "workdir"
  result = main_runner.run_main(
    "glue.py:task=custom,runlocal",
    workdir,
    f"--flagfile={folder / 'flags.txt'}",
    "--config.total_steps=2",
    num_devices=1,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  records = [json.loads(line) for line in (workdir / "metrics.jsonl").open()]
  evaluation = next(r for r in records if "eval/score" in r)
  assert evaluation["eval/count"] == len(splits["dev"])
  assert evaluation["eval/score"] == evaluation["eval/accuracy"]
  assert 0.0 <= evaluation["eval/accuracy"] <= 1.0


def test_custom_task_needs_the_models_class_count(tmp_path):
  config = glue_config.get_config("task=custom,runlocal")
  config.data.data_dir = str(tmp_path)
  config.data.custom.directory = "WN"
  config.data.custom.labels = ("noun.animal", "noun.plant", "adj.all")
  facts = contract.ModelFacts(tuple(config.model.input_shape), config.model.num_classes)
  with pytest.raises(ValueError, match="glue custom: the model has 2 outputs, the task needs 3"):
    glue.make_data(config, facts, process_index=0, process_count=1)
