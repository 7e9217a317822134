"""The benchmark suite: workload shapes, analytic FLOPs against XLA's, measurements, reports."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from perceiver_jax import model
from perceiver_jax import registry
from perceiver_jax.tools import benchmarking

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def _linear(n_in, n_out):
  return n_in * n_out + n_out


def _block(q, kv, qk, v, widening):
  """Parameters of a cross- or self-attention block (LayerNorms, Q/K/V/O, MLP)."""
  norms = 2 * q + (2 * kv if kv is not None else 0) + 2 * q
  kv = q if kv is None else kv
  attention = _linear(q, qk) + _linear(kv, qk) + _linear(kv, v) + _linear(v, q)
  return norms + attention + _linear(q, widening * q) + _linear(widening * q, q)


def test_io_small_is_the_specified_model():
  cfg = benchmarking.io_small()
  assert model.input_channels(cfg) == 261  # 3 + 2 x (2 x 64) sines/cosines + 2 positions
  assert benchmarking._num_inputs(cfg) == 4096
  expected = (
    256 * 512  # latents
    + _block(512, 261, 261, 261, 1)  # one cross-attend, qk = v = 261
    + 4 * _block(512, None, 512, 512, 1)  # 4 self-attends shared by the 2 blocks
    + 512  # the classification query
    + _block(512, 512, 512, 512, 1)
    + _linear(512, 10)
  )
  assert model.count_params(model.param_shapes(cfg)[0]) == expected


def test_perceiver_small_shares_cross_attends_as_the_paper():
  cfg = benchmarking.perceiver_small()
  params = model.param_shapes(cfg)[0]
  cross = {
    k.split("/~/")[1].split("/")[0] for k in params if k.startswith("perceiver_encoder/~/cross_att")
  }
  assert cross == {"cross_attention", "cross_attention_1"}  # 2 weight sets for 4 cross-attends
  expected = (
    128 * 256
    + 2 * _block(256, 261, 261, 261, 1)  # the first cross-attend, and the other 3
    + 2 * _block(256, None, 256, 256, 1)
    + _linear(256, 10)
  )
  assert model.count_params(params) == expected


def test_workload_cases():
  long = benchmarking.cases("imagenet-long", chunk_size=2048)
  assert [c.model.attention_chunk_size for c in long] == [0, 2048]
  assert benchmarking._num_inputs(long[0].model) == 224 * 224
  scaling = benchmarking.cases("scaling")
  inputs = [benchmarking._num_inputs(c.model) for c in scaling if "perceiver" in c.label]
  assert inputs == list(benchmarking.SCALING_INPUTS)
  for case in scaling:  # the same 261 input channels at every size
    assert model.input_channels(case.model) == 261
  with pytest.raises(ValueError, match="unknown workload 'huge'"):
    benchmarking.cases("huge")


def _xla_forward_flops(cfg):
  forward = model.build_model(cfg)
  params, state = model.param_shapes(cfg)
  compiled = (
    jax.jit(lambda p, s, x: forward.apply(p, s, None, x, is_training=False)[0])
    .lower(params, state, model.dummy_inputs(cfg, 1))
    .compile()
  )
  return benchmarking._xla_flops(compiled)


@pytest.mark.parametrize(
  "name", ["io-small", "perceiver-small", "transformer", "io_conv", "modelnet40"]
)
def test_analytic_flops_agree_with_xla(name):
  """Matrix multiplies are almost all of a Perceiver's work: XLA's count (which adds the
  elementwise operations) is at most a few percent above the analytic one."""
  cfg = {
    "io-small": benchmarking.io_small,
    "perceiver-small": benchmarking.perceiver_small,
    "transformer": lambda: benchmarking.scaling_transformer(32),
    "io_conv": lambda: registry.get_model_config("io_conv"),
    "modelnet40": lambda: registry.get_model_config("modelnet40"),
  }[name]()
  analytic, xla = benchmarking.forward_flops(cfg), _xla_forward_flops(cfg)
  assert 0.97 * xla <= analytic <= xla
  assert benchmarking.train_flops(cfg) == 3 * analytic


def test_no_analytic_flops_for_convnets():
  assert benchmarking.forward_flops(registry.get_model_config("fmnist_convnet_ff")) is None


def test_measure_times_a_training_step():
  case = benchmarking.Case("test", "testing", registry.get_model_config("testing"), 2)
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


def test_update_results_replaces_only_its_section(tmp_path):
  path = str(tmp_path / "results.md")
  benchmarking.update_results(path, {"a": "## a\n\nfirst a\n", "b": "## b\n\nfirst b\n"})
  benchmarking.update_results(path, {"a": "## a\n\nsecond a\n", "c": "## c\n\nc\n"})
  text = pathlib.Path(path).read_text()
  assert "first a" not in text and "second a" in text and "first b" in text
  assert text.index("## a") < text.index("## b") < text.index("## c")


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
