"""GLUE's submission files from `perceiver_jax.glue_predict`: MNLI's two test files and the
diagnostic set (AX) from a model fine-tuned for 2 steps, STS-B's clipping, one process only."""

import logging
import os
import shutil
import subprocess
import sys

import jax
import main_runner
import numpy as np
import pytest
import test_glue_data

from configs import glue as glue_config
from perceiver_jax import glue_predict
from perceiver_jax import pretrained
from perceiver_jax.data import glue

_MNLI_LABELS = {"contradiction", "entailment", "neutral"}
# Sentence pairs of the test files (`test_glue_data._rows(i)` for i < 3): the diagnostic's rows
# repeat two of them (and one new pair), so their predictions must equal the matched file's.
_PAIR = test_glue_data._PAIR


def _pair(i: int) -> tuple[str, str]:
  return f"{_PAIR[0]} {i}", f"{_PAIR[1]} {i}"


def _write_mnli_tests(folder, name: str, indices: list[int]) -> None:
  """An MNLI test file in GLUE's layout whose example i has index `indices[i]`."""
  head = test_glue_data._HEADERS["mnli"][1]
  lines = [head]
  for i, index in enumerate(indices):
    row = test_glue_data._rows("mnli", i)[1].split("\t")
    lines.append("\t".join([str(index), *row[1:]]))
  (folder / f"{name}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _write_diagnostic(data_dir, pairs: dict[int, tuple[str, str]]) -> None:
  """GLUE's `diagnostic/diagnostic.tsv`: `index\\tsentence1\\tsentence2`, no labels."""
  folder = data_dir / "diagnostic"
  folder.mkdir(exist_ok=True)
  lines = ["index\tsentence1\tsentence2"] + [f"{i}\t{a}\t{b}" for i, (a, b) in pairs.items()]
  (folder / "diagnostic.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def mnli_run(tmp_path_factory):
  """(data_dir, workdir) of `configs/glue.py:task=mnli,runlocal` trained for 2 steps on tiny
  MNLI files; test_matched has indices 100..103, test_mismatched 200..201, and the
  diagnostic 0..2 (its rows 0 and 2 are test_matched's pairs 1 and 3)."""
  root = tmp_path_factory.mktemp("glue_predict")
  data_dir = test_glue_data.write_tiny_glue(root / "glue_data", ("mnli",))
  _write_mnli_tests(data_dir / "MNLI", "test_matched", [100, 101, 102, 103])
  _write_mnli_tests(data_dir / "MNLI", "test_mismatched", [200, 201])
  _write_diagnostic(data_dir, {0: _pair(1), 1: ("Nobody is here.", "A dog barks."), 2: _pair(3)})
  workdir = root / "workdir"
  result = main_runner.run_main(
    "glue.py:task=mnli,runlocal",
    workdir,
    f"--config.data.data_dir={data_dir}",
    "--config.total_steps=2",
    num_devices=1,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  return data_dir, workdir


def _read(path) -> list[list[str]]:
  return [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()]


def test_mnli_writes_both_test_files_and_the_diagnostic(mnli_run, tmp_path):
  data_dir, workdir = mnli_run
  out = tmp_path / "submit"
  predict = subprocess.run(
    [
      sys.executable,
      "-m",
      "perceiver_jax.glue_predict",
      "--config=configs/glue.py:task=mnli,runlocal",
      f"--config.data.data_dir={data_dir}",
      f"--workdir={workdir}",
      f"--output_dir={out}",
      "--batch_size=3",  # 4 matched rows: the last batch is padded
    ],
    cwd=main_runner.REPO_ROOT,
    env={**os.environ, "JAX_PLATFORMS": "cpu"},
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert predict.returncode == 0, predict.stderr[-3000:]
  assert sorted(os.listdir(out)) == ["AX.tsv", "MNLI-m.tsv", "MNLI-mm.tsv"]
  files = {name: _read(out / f"{name}.tsv") for name in ("MNLI-m", "MNLI-mm", "AX")}
  for name, indices in (("MNLI-m", range(100, 104)), ("MNLI-mm", (200, 201)), ("AX", range(3))):
    rows = files[name]
    assert rows[0] == ["index", "prediction"]
    assert [row[0] for row in rows[1:]] == [str(i) for i in indices]
    assert all(len(row) == 2 and row[1] in _MNLI_LABELS for row in rows[1:])
  # The diagnostic's sentence1/sentence2 columns feed the model as MNLI's do.
  matched, ax = files["MNLI-m"], files["AX"]
  assert ax[1][1] == matched[2][1] and ax[3][1] == matched[4][1]


def test_predictions_are_the_models_argmax_and_ax_absent_is_logged(mnli_run, tmp_path, caplog):
  data_dir, workdir = mnli_run
  no_ax = tmp_path / "glue_data"
  shutil.copytree(data_dir / "MNLI", no_ax / "MNLI")
  config = glue_config.get_config("task=mnli,runlocal")
  config.data.data_dir = str(no_ax)
  out = tmp_path / "submit"
  with caplog.at_level(logging.WARNING):
    written = glue_predict.write_predictions(config, str(workdir), str(out), 4)
  assert [os.path.basename(p) for p in written] == ["MNLI-m.tsv", "MNLI-mm.tsv"]
  assert not (out / "AX.tsv").exists()
  assert "No GLUE diagnostic file" in caplog.text and "AX.tsv is not written" in caplog.text
  # The same labels as the model's argmax on the encoded pairs, one forward pass per example.
  forward, params, state = pretrained.load_trained_model(str(workdir), config.model)
  split = glue.read_split(str(no_ax), "mnli", "test_matched", config.model.input_shape[0])
  apply = jax.jit(lambda ids: forward.apply(params, state, None, ids, is_training=False)[0])
  logits = np.concatenate([apply(split.ids[i : i + 1]) for i in range(len(split.ids))])
  expected = [glue.TASKS["mnli"].labels[k] for k in np.argmax(logits, axis=-1)]
  assert [row[1] for row in _read(out / "MNLI-m.tsv")[1:]] == expected


def test_read_diagnostic_errors(tmp_path):
  with pytest.raises(ValueError, match="no file .*diagnostic.tsv"):
    glue.read_diagnostic(str(tmp_path), 64)
  (tmp_path / "diagnostic").mkdir()
  (tmp_path / "diagnostic" / "diagnostic.tsv").write_text("\n")
  with pytest.raises(ValueError, match="empty file"):
    glue.read_diagnostic(str(tmp_path), 64)
  (tmp_path / "diagnostic" / "diagnostic.tsv").write_text("index\tpremise\thypothesis\n0\ta\tb\n")
  with pytest.raises(ValueError, match="no column 'sentence1'"):
    glue.read_diagnostic(str(tmp_path), 64)


def test_stsb_scores_are_clipped_to_0_5_and_labels_are_names():
  stsb = glue.TASKS["stsb"]
  scores = np.array([[-1.25], [0.0], [2.5], [4.9996], [7.0]])
  assert glue_predict.format_predictions(stsb, scores) == [
    "0.000",
    "0.000",
    "2.500",
    "5.000",
    "5.000",
  ]
  logits = np.array([[0.1, 2.0, -1.0], [3.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
  assert glue_predict.format_predictions(glue.TASKS["mnli"], logits) == [
    "entailment",
    "contradiction",
    "neutral",
  ]


def test_refuses_several_processes(monkeypatch, tmp_path):
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  config = glue_config.get_config("task=sst2,runlocal")
  with pytest.raises(ValueError, match="glue_predict runs in one process, not 2"):
    glue_predict.write_predictions(config, str(tmp_path), str(tmp_path / "out"), 4)
