"""GLUE evaluation in 2 `jax.distributed` processes on 127.0.0.1 equals 1 process and the
metrics of the model's outputs on every dev example counted once, on a dev split of 7 examples
(global eval batch 4: padding rows, and shards of 4 and 3)."""

import json
import os

import main_runner
import numpy as np
import pytest
import scipy.stats
import test_glue_data
import test_multihost

WORKER = os.path.join(os.path.dirname(__file__), "glue_multiprocess_worker.py")
NUM_DEV = 7


def _launch(data_dir, out, num_processes: int, devices_per_process: int) -> dict:
  """Runs the worker in `num_processes` processes; returns process 0's results."""
  test_multihost.launch(
    WORKER,
    [data_dir, out],
    num_processes,
    devices_per_process,
    extra_env={"PYTHONPATH": str(main_runner.REPO_ROOT)},
    cwd=main_runner.REPO_ROOT,
  )
  return json.loads(out.read_text())


def _numpy_metrics(task: str, outputs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
  """GLUE's metrics straight from a confusion matrix or scipy, for the 7 dev examples."""
  if task == "stsb":
    return {
      "eval/pearson": scipy.stats.pearsonr(outputs[:, 0], labels)[0],
      "eval/spearman": scipy.stats.spearmanr(outputs[:, 0], labels)[0],
    }
  p, y = np.argmax(outputs, axis=-1), labels
  tp, tn = np.sum((p == 1) & (y == 1)), np.sum((p == 0) & (y == 0))
  fp, fn = np.sum((p == 1) & (y == 0)), np.sum((p == 0) & (y == 1))
  if task == "cola":
    return {
      "eval/matthews": (tp * tn - fp * fn) / np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    }
  return {"eval/f1": 2 * tp / (2 * tp + fp + fn), "eval/accuracy": (tp + tn) / len(y)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """Process 0's results of the 1-process (2 devices) and 2-process (1 device each) runs."""
  root = tmp_path_factory.mktemp("glue_multiprocess")
  data_dir = test_glue_data.write_tiny_glue(
    root / "glue_data", ("cola", "mrpc", "stsb"), num_dev=NUM_DEV
  )
  return _launch(data_dir, root / "one.json", 1, 2), _launch(data_dir, root / "two.json", 2, 1)


@pytest.mark.parametrize("task", ["cola", "mrpc", "stsb"])
def test_two_processes_equal_one_process_and_numpy(runs, task):
  one, two = runs[0][task], runs[1][task]
  outputs, labels = np.asarray(one["outputs"]), np.asarray(one["labels"])
  assert len(labels) == NUM_DEV
  np.testing.assert_array_equal(two["labels"], labels)
  if task != "stsb":  # both classes predicted, so F1 and Matthews are not degenerate
    assert sorted(np.bincount(np.argmax(outputs, axis=-1))) == [3, 4]
  expected = _numpy_metrics(task, outputs, labels)
  for metrics in (one["metrics"], two["metrics"]):
    assert metrics["eval/count"] == NUM_DEV
    assert set(expected) < set(metrics)
    for name, value in expected.items():
      assert metrics[name] == pytest.approx(value, abs=1e-4), name
    assert metrics["eval/score"] == pytest.approx(np.mean(list(expected.values())), abs=1e-4)
  for name in one["metrics"]:
    assert two["metrics"][name] == pytest.approx(one["metrics"][name], rel=1e-5, abs=1e-6), name


def test_glue_predict_refuses_several_processes(runs):
  assert runs[1]["glue_predict_error"] == (
    "glue_predict runs in one process, not 2: run it on one host"
  )
