"""GLUE loaders on tiny files in the benchmark's exact distribution layouts."""

import pathlib

import ml_collections
import numpy as np
import pytest

from configs import glue as glue_config
from perceiver_jax.data import bytes_tokenizer as bt
from perceiver_jax.data import contract
from perceiver_jax.data import datasets
from perceiver_jax.data import glue

_PAIR = ("A man is playing a guitar.", "Someone plays an instrument.")
_MNLI_HEAD = (
  "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
  "sentence1_parse\tsentence2_parse\tsentence1\tsentence2"
)
_STSB_HEAD = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2"


def _rows(task: str, i: int) -> tuple[str, str]:
  """(train/dev line, test line) of example i of `task`, in GLUE's column layout."""
  s1, s2 = f"{_PAIR[0]} {i}", f"{_PAIR[1]} {i}"
  b = i % 2
  if task == "cola":
    return f"gj04\t{b}\t{'' if b else '*'}\t{s1}", f"{i}\t{s1}"
  if task == "sst2":
    return f"{s1}\t{b}", f"{i}\t{s1}"
  if task == "mrpc":
    return f"{b}\t{100 + i}\t{200 + i}\t{s1}\t{s2}", f"{i}\t{100 + i}\t{200 + i}\t{s1}\t{s2}"
  if task == "stsb":
    meta = f"{i}\tmain-captions\tMSRvid\t2012test\t{i:04d}\tnone\tnone\t{s1}\t{s2}"
    return f"{meta}\t{i % 6 * 0.8:.3f}", meta
  if task == "qqp":
    return f"{i}\t{2 * i}\t{2 * i + 1}\t{s1}\t{s2}\t{b}", f"{i}\t{s1}\t{s2}"
  if task == "mnli":
    label = ("contradiction", "entailment", "neutral")[i % 3]
    meta = f"{i}\t{31193 + i}\t{31193 + i}n\tfiction\t( {s1} )\t( {s2} )\t(ROOT {s1})\t(ROOT {s2})"
    return f"{meta}\t{s1}\t{s2}\t{label}\t{label}", f"{meta}\t{s1}\t{s2}"
  if task == "qnli":
    return f"{i}\t{s1}?\t{s2}\t{('entailment', 'not_entailment')[b]}", f"{i}\t{s1}?\t{s2}"
  label = ("entailment", "not_entailment")[b] if task == "rte" else str(b)
  return f"{i}\t{s1}\t{s2}\t{label}", f"{i}\t{s1}\t{s2}"


_HEADERS = {  # (train/dev header or None, test header)
  "cola": (None, "index\tsentence"),
  "sst2": ("sentence\tlabel", "index\tsentence"),
  "mrpc": ("Quality\t#1 ID\t#2 ID\t#1 String\t#2 String",) * 2,
  "stsb": (f"{_STSB_HEAD}\tscore", _STSB_HEAD),
  "qqp": ("id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate", "id\tquestion1\tquestion2"),
  "mnli": (f"{_MNLI_HEAD}\tlabel1\tgold_label", _MNLI_HEAD),
  "qnli": ("index\tquestion\tsentence\tlabel", "index\tquestion\tsentence"),
  "rte": ("index\tsentence1\tsentence2\tlabel", "index\tsentence1\tsentence2"),
  "wnli": ("index\tsentence1\tsentence2\tlabel", "index\tsentence1\tsentence2"),
}
_HEADERS["mrpc"] = (_HEADERS["mrpc"][0], "index\t#1 ID\t#2 ID\t#1 String\t#2 String")


def write_tiny_glue(root: pathlib.Path, tasks=tuple(glue.TASKS), num_train=16, num_dev=5):
  """GLUE's layout under `root`: <DIR>/train.tsv, dev(s) and test(s), `num_train` and
  `num_dev` examples, 3 test examples. Returns root."""
  for task in tasks:
    spec = glue.TASKS[task]
    folder = root / spec.directory
    folder.mkdir(parents=True, exist_ok=True)
    head, test_head = _HEADERS[task]
    for split, count in (("train", num_train), *((d, num_dev) for d in spec.dev_splits)):
      lines = ([head] if head else []) + [_rows(task, i)[0] for i in range(count)]
      (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for split in spec.test_splits:
      lines = [test_head] + [_rows(task, i)[1] for i in range(3)]
      (folder / f"{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
  return root


@pytest.mark.parametrize("task", sorted(glue.TASKS))
def test_every_task_reads_train_dev_and_test(tmp_path, task):
  root = write_tiny_glue(tmp_path, (task,))
  spec = glue.TASKS[task]
  train = glue.read_split(str(root), task, "train", 128)
  assert train.ids.shape == (16, 128) and train.ids.dtype == np.int32
  assert train.skipped == {"malformed": 0, "unknown_label": 0, "cropped": 0}
  if spec.is_regression:
    np.testing.assert_allclose(train.labels[:3], [0.0, 0.8, 1.6])
    assert train.labels.dtype == np.float32
  else:
    assert train.labels.dtype == np.int32
    expected = [spec.labels.index(_label(task, i)) for i in range(16)]
    np.testing.assert_array_equal(train.labels, expected)
  for dev in spec.dev_splits:
    assert len(glue.read_split(str(root), task, dev, 128).ids) == 5
  for test in spec.test_splits:
    split = glue.read_split(str(root), task, test, 128)
    assert split.labels is None and split.index == ["0", "1", "2"]
  # The first sentence's bytes follow CLS; a pair's second follows a SEP.
  first = glue.encode_example((f"{_PAIR[0]} 0",), 128)[0] if task in ("cola", "sst2") else None
  if first is not None:
    np.testing.assert_array_equal(train.ids[0], first)
  else:
    assert train.ids[0, 0] == bt.CLS and np.sum(train.ids[0] == bt.SEP) == 2


def _label(task: str, i: int) -> str:
  if task == "mnli":
    return ("contradiction", "entailment", "neutral")[i % 3]
  if task in ("qnli", "rte"):
    return ("entailment", "not_entailment")[i % 2]
  return str(i % 2)


def test_encoding_joins_pairs_with_sep_crops_and_pads():
  ids, cropped = glue.encode_example(("ab", "c"), 8)
  np.testing.assert_array_equal(ids, [bt.CLS, 97 + 6, 98 + 6, bt.SEP, 99 + 6, bt.SEP, 0, 0])
  assert not cropped
  ids, cropped = glue.encode_example(("abcdef",), 4)
  np.testing.assert_array_equal(ids, [bt.CLS, 97 + 6, 98 + 6, 99 + 6])
  assert cropped


def test_bad_rows_are_counted_and_skipped(tmp_path):
  folder = tmp_path / "SST-2"
  folder.mkdir()
  (folder / "train.tsv").write_text(
    "sentence\tlabel\nfine\t1\nno label column\nwhat\t7\n" + "x" * 40 + "\t0\n"
  )
  split = glue.read_split(str(tmp_path), "sst2", "train", 16)
  assert split.skipped == {"malformed": 1, "unknown_label": 1, "cropped": 1}
  np.testing.assert_array_equal(split.labels, [1, 0])


def test_errors_name_the_problem(tmp_path):
  write_tiny_glue(tmp_path, ("rte",))
  with pytest.raises(ValueError, match="config.data.task='sts'"):
    glue.read_split(str(tmp_path), "sts", "train", 16)
  with pytest.raises(ValueError, match="split 'dev_matched'"):
    glue.read_split(str(tmp_path), "rte", "dev_matched", 16)
  with pytest.raises(ValueError, match="no file"):
    glue.read_split(str(tmp_path), "qnli", "train", 16)
  (tmp_path / "RTE" / "train.tsv").write_text("index\tsentence1\tlabel\n0\ta\tentailment\n")
  with pytest.raises(ValueError, match="no column 'sentence2'"):
    glue.read_split(str(tmp_path), "rte", "train", 16)


def _config(root, task="mrpc", batch_size=4, eval_batch_size=4):
  return ml_collections.ConfigDict(
    dict(
      seed=0,
      batch_size=batch_size,
      eval_batch_size=eval_batch_size,
      # Every field of the config's data section (config.data.custom included).
      data=dict(glue_config.get_config(f"task={task}").data, data_dir=str(root), eval_split="dev"),
    )
  )


def test_batches_follow_the_contract(tmp_path):
  write_tiny_glue(tmp_path, ("mrpc", "stsb"))
  facts = contract.ModelFacts((64,), 2)
  data = datasets.load(_config(tmp_path), facts, process_index=0, process_count=1)
  assert (data.num_train_examples, data.num_eval_examples) == (16, 5)
  batch = next(data.train_batches(3, (2, 2)))
  assert batch["inputs"].shape == (2, 2, 64) and batch["labels"].shape == (2, 2)
  order = contract.TrainOrder(16, 4, 0)
  full = glue.read_split(str(tmp_path), "mrpc", "train", 64)
  np.testing.assert_array_equal(batch["inputs"].reshape(4, 64), full.ids[order.local_indices(3)])
  evals = list(data.eval_batches((4,)))
  masks = np.concatenate([b["mask"] for b in evals])
  np.testing.assert_array_equal(masks, [1, 1, 1, 1, 1, 0, 0, 0])
  stsb = datasets.load(
    _config(tmp_path, "stsb"), contract.ModelFacts((64,), 1), process_index=0, process_count=1
  )
  assert next(stsb.train_batches(0, (4,)))["labels"].dtype == np.float32


def test_make_data_checks_the_model_and_split(tmp_path):
  write_tiny_glue(tmp_path, ("mnli",))
  config = _config(tmp_path, "mnli")
  with pytest.raises(ValueError, match="eval_split='dev'"):
    datasets.load(config, contract.ModelFacts((64,), 3))
  config.data.eval_split = "dev_mismatched"
  with pytest.raises(ValueError, match="2 outputs, the task needs 3"):
    datasets.load(config, contract.ModelFacts((64,), 2))
  assert datasets.load(config, contract.ModelFacts((64,), 3)).num_eval_examples == 5
