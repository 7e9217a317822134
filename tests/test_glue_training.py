"""GLUE fine-tuning end to end: `python -m perceiver_jax.main --config=configs/glue.py:...,runlocal`
for 2 steps from an MLM checkpoint on tiny GLUE files, then the test-set submission files."""

import json
import math
import os
import subprocess
import sys

import jax
import main_runner
import pytest
import test_glue_data

from configs import glue as glue_config
from perceiver_jax import model
from perceiver_jax import official_format
from perceiver_jax import registry


@pytest.fixture(scope="module")
def mlm_pickle(tmp_path_factory):
  """Initialised `mlm_testing` params as a bare official-format pickle: an MLM checkpoint."""
  cfg = registry.get_model_config("mlm_testing")
  params, _ = model.build_model(cfg).init(
    jax.random.PRNGKey(0), model.dummy_inputs(cfg), is_training=True
  )
  path = str(tmp_path_factory.mktemp("mlm") / "mlm.pkl")
  official_format.save_official_pickle(path, jax.device_get(params), bare=True)
  return path


def test_config_is_the_paper_recipe():
  config = glue_config.get_config("task=sst2")
  assert config.variant == "language_perceiver_io" and config.model.decoder.type == "sentence"
  assert (config.task.name, config.task.glue_task, config.data.task) == ("glue", "sst2", "sst2")
  assert (config.num_epochs, config.batch_size, config.pretrained.path) == (10.0, 32, "")
  opt = config.optimizer
  assert (opt.name, opt.learning_rate, opt.warmup_steps, opt.weight_decay) == (
    "lamb",
    5e-5,
    200,
    0.01,
  )
  assert glue_config.get_config("task=stsb").model.num_classes == 1
  assert glue_config.get_config("task=mnli").data.eval_split == "dev_matched"
  assert glue_config.get_config("task=cola,runlocal").model.input_shape == (64,)
  with pytest.raises(ValueError, match="config.data.task='sts'"):
    glue_config.get_config("task=sts")


def _records(workdir):
  return [json.loads(line) for line in (workdir / "metrics.jsonl").open()]


@pytest.mark.parametrize("task", ["sst2", "stsb"])
def test_fine_tuning_runs_two_steps_from_mlm(tmp_path, mlm_pickle, task):
  data_dir = test_glue_data.write_tiny_glue(tmp_path / "glue_data", (task,))
  workdir = tmp_path / "workdir"
  config = f"glue.py:task={task},runlocal"
  result = main_runner.run_main(
    config,
    workdir,
    f"--config.data.data_dir={data_dir}",
    f"--config.pretrained.path={mlm_pickle}",
    "--config.total_steps=2",
    num_devices=1,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  records = _records(workdir)
  train = next(r for r in records if "train/loss" in r)
  evaluation = next(r for r in records if "eval/score" in r)
  assert math.isfinite(train["train/loss"]) and evaluation["eval/count"] == 5
  metric = "eval/pearson" if task == "stsb" else "eval/accuracy"
  assert math.isfinite(evaluation[metric])
  # A sweep reads the dev score of each finished point from its final.json.
  assert "eval/score" in json.loads((workdir / "final.json").read_text())
  # The submission file of the test split.
  out = tmp_path / "submit"
  predict = subprocess.run(
    [
      sys.executable,
      "-m",
      "perceiver_jax.glue_predict",
      f"--config=configs/{config}",
      f"--config.data.data_dir={data_dir}",
      f"--workdir={workdir}",
      f"--output_dir={out}",
      "--batch_size=2",
    ],
    cwd=main_runner.REPO_ROOT,
    env={**os.environ, "JAX_PLATFORMS": "cpu"},
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert predict.returncode == 0, predict.stderr[-3000:]
  name = "STS-B" if task == "stsb" else "SST-2"
  lines = (out / f"{name}.tsv").read_text().splitlines()
  assert lines[0] == "index\tprediction" and [line.split("\t")[0] for line in lines[1:]] == [
    "0",
    "1",
    "2",
  ]
  for line in lines[1:]:
    prediction = line.split("\t")[1]
    if task == "stsb":
      assert 0.0 <= float(prediction) <= 5.0
    else:
      assert prediction in ("0", "1")
