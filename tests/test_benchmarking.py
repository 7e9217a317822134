"""The benchmark measurements, and `scripts/benchmark.py` end to end."""

import json
import math
import os
import pathlib
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import pytest

from perceiver_jax import model
from perceiver_jax import registry
from perceiver_jax.tools import benchmark_workloads as workloads
from perceiver_jax.tools import benchmarking

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_measure_times_a_training_step():
  case = workloads.Case("test", "testing", registry.get_model_config("testing"), 2)
  result = benchmarking.measure(case, dtype="float32", steps=2, warmup=1)
  assert result["finite"] and result["num_params"] == model.count_params(
    model.param_shapes(case.model)[0]
  )
  assert result["train_step_s"] > 0 and result["inference_s"] > 0
  assert result["train_examples_per_s"] == pytest.approx(2 / result["train_step_s"])
  # XLA counts the optimizer and the elementwise work too.
  assert result["xla_train_flops_per_example"] > result["train_flops_per_example"]
  assert result["xla_train_bytes"] > 0 and result["peak_rss_bytes"] > 0
  mfu = benchmarking.utilisation(result, peak_flops_per_s=1e12)
  expected = result["train_flops_per_example"] * result["train_examples_per_s"] / 1e12
  assert mfu["train_mfu"] == pytest.approx(expected)


def test_measure_times_a_masked_lm_training_step():
  cfg = registry.get_model_config("mlm_testing")
  case = workloads.Case("test", "mlm", cfg, 2, task="masked_lm")
  result = benchmarking.measure(case, dtype="float32", steps=1, warmup=1)
  # Initialised logits are near zero: about ln(262) nats per predicted byte.
  assert result["loss"] == pytest.approx(math.log(cfg.num_classes), rel=0.05)
  assert result["num_inputs"] == 64 and result["inference_s"] > 0
  assert result["train_flops_per_example"] == 3 * result["forward_flops_per_example"]
  assert result["xla_train_flops_per_example"] > result["train_flops_per_example"]


def test_step_memory_counts_a_donated_buffer_once():
  x = jnp.zeros((1024, 1024))  # 4 MiB
  donated = jax.jit(lambda x: x * 2, donate_argnums=0).lower(x).compile()
  copied = jax.jit(lambda x: x * 2).lower(x).compile()
  assert benchmarking._xla_bytes(donated) == x.nbytes
  assert benchmarking._xla_bytes(copied) == 2 * x.nbytes


def test_matmul_peak_is_a_rate():
  peak = benchmarking.matmul_peak("float32", sizes=(128, 256), steps=3)
  assert peak["size"] in (128, 256) and peak["flops_per_s"] > 1e8


def test_median_run_keeps_the_median_measurement():
  runs = [{"train_step_s": t, "label": str(t)} for t in (3.0, 1.0, 2.0, 9.0)]
  best = benchmarking.median_run(runs)
  assert best["label"] == "2.0" and best["rounds"] == 4
  assert best["train_step_s_runs"] == [3.0, 1.0, 2.0, 9.0]
  assert benchmarking.median_run(runs[:3])["label"] == "2.0"
  with pytest.raises(ValueError, match="at least one run"):
    benchmarking.median_run([])


def test_memory_mode_gives_the_same_loss_in_a_fresh_process():
  """Plain and chunked + remat are the same computation: the same loss and gradient norm."""
  plain = benchmarking.in_fresh_process(benchmarking.measure_memory, "testing", "plain", 2, 8, 1)
  remat = benchmarking.measure_memory("testing", "chunked+remat", 2, 8, 1)
  assert plain["finite"] and plain["chunk_size"] == 0 and remat["chunk_size"] == 8
  assert remat["loss"] == pytest.approx(plain["loss"], rel=1e-5)
  assert remat["grad_norm"] == pytest.approx(plain["grad_norm"], rel=1e-4)
  # Initialised logits are near zero: about ln(K) nats.
  assert plain["loss"] == pytest.approx(
    math.log(registry.get_model_config("testing").num_classes), rel=0.2
  )


def _benchmark(*args, tmp_path):
  return subprocess.run(
    [sys.executable, "scripts/benchmark.py", *args],
    cwd=REPO_ROOT,
    env={**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""},
    capture_output=True,
    text=True,
    timeout=600,
  )


def test_cli_measures_a_workload_and_writes_results(tmp_path):
  results, out = tmp_path / "bench" / "results.md", tmp_path / "out.json"
  proc = _benchmark(
    "--workload=perceiver-small",
    "--steps=1",
    "--rounds=2",
    f"--results={results}",
    f"--json={out}",
    tmp_path=tmp_path,
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  data = json.loads(out.read_text())
  (row,) = data["perceiver-small"]
  assert row["finite"] and row["batch_size"] == 8 and 0 < row["train_mfu"] < 1.5
  assert row["rounds"] == 2 and len(row["train_step_s_runs"]) == 2
  text = results.read_text()
  assert "## perceiver-small" in text and "Matmul peak measured in this run" in text
  assert "train MFU" in text and data["commit"].split()[0] in text


def test_cli_rejects_an_unknown_dtype(tmp_path):
  proc = _benchmark("--workload=io-small", "--dtypes=float16", tmp_path=tmp_path)
  assert proc.returncode != 0
  assert "--dtypes has 'float16'; expected float32 or bfloat16" in proc.stderr


def test_timed_steps_wait_for_the_last_steps_cleanup_untimed(monkeypatch):
  """Between timed steps the benchmark waits for XLA:CPU to free the last step's
  temporaries (`host_memory.wait_for_step_cleanup`), and the wait is not in the times."""
  events = []

  def step():
    events.append("step")
    return jnp.zeros(())

  def wait():
    events.append("wait")
    time.sleep(0.05)

  monkeypatch.setattr(benchmarking.host_memory, "wait_for_step_cleanup", wait)
  seconds = benchmarking._median_seconds(step, steps=3, warmup=1)
  assert events == ["step", "wait"] * 4
  assert seconds < 0.04
