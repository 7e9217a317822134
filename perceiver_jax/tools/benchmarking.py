"""The benchmark suite's measurements: training and inference speed, FLOP utilisation,
memory and compile time of a model case, and the ImageNet input pipeline's speed.

The workloads are in `benchmark_workloads.py`, the FLOP counts in `flops.py`, the tables and
the suite's run in `benchmark_report.py` and `benchmark_suite.py`; `scripts/benchmark.py` is
the command line.
"""

from __future__ import annotations

import concurrent.futures
import functools
import multiprocessing
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from perceiver_jax import host_memory
from perceiver_jax import model as model_lib
from perceiver_jax import optimizer as optimizer_lib
from perceiver_jax import tasks
from perceiver_jax import train_step as ts
from perceiver_jax.tools import benchmark_workloads as workloads
from perceiver_jax.tools import flops
from perceiver_jax.tools import synthetic_imagenet


def peak_rss_bytes() -> int:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def in_fresh_process(function: Callable[..., dict], *args) -> dict:
  """`function(*args)` run in a new Python process, so that its peak RSS is its own.

  `function` must be a module-level function (the new process imports it by name).
  """
  context = multiprocessing.get_context("spawn")
  with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
    return pool.submit(function, *args).result()


def _median_seconds(fn, steps: int, warmup: int) -> float:
  for _ in range(warmup):
    jax.block_until_ready(fn())
    host_memory.wait_for_step_cleanup()
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
    host_memory.wait_for_step_cleanup()  # not timed
  return statistics.median(times)


@functools.cache
def _jitted_matmul():
  # float32 accumulation: how every product of the model's bfloat16 path runs
  # (`precision.dot`), and the only bfloat16 product that XLA:CPU runs on AMX / AVX512-BF16.
  return jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32))


# The matmul peak's square sizes: a 4,096^3 float32 product runs up to 2x faster than the
# small ones on some CPUs, and a GPU needs 8,192 to approach its peak.
PEAK_SIZES = {"cpu": (1024, 2048, 3072, 4096), "accelerator": (2048, 4096, 8192)}


def peak_method(sizes=None) -> str:
  """How `matmul_peak` measures, for the line beside every MFU."""
  sizes = sizes or _peak_sizes()
  listed = ", ".join(f"{n:,}" for n in sizes)
  return (
    f"the best median time of n x n x n products, n in {{{listed}}}, in the case's dtype "
    "with float32 accumulation, in the same run (2 n^3 FLOPs each)"
  )


def _peak_sizes() -> tuple[int, ...]:
  return PEAK_SIZES["cpu" if jax.default_backend() == "cpu" else "accelerator"]


def matmul_peak(dtype: str = "float32", sizes=None, steps: int = 5) -> dict:
  """This machine's matmul throughput: the best over `sizes` (by default `PEAK_SIZES` of
  this platform) of the median time of an n x n x n product of `dtype` operands
  accumulated in float32 (FLOP/s, 2 n^3 per product): `peak_method`."""
  sizes = sizes or _peak_sizes()
  best = {"flops_per_s": 0.0}
  for n in sizes:
    keys = jax.random.split(jax.random.PRNGKey(n), 2)
    a = jax.random.normal(keys[0], (n, n), jnp.float32).astype(dtype)
    b = jax.random.normal(keys[1], (n, n), jnp.float32).astype(dtype)
    seconds = _median_seconds(lambda a=a, b=b: _jitted_matmul()(a, b), steps, warmup=2)
    rate = 2 * n**3 / seconds
    if rate > best["flops_per_s"]:
      best = {"flops_per_s": rate, "size": n, "dtype": dtype}
  return best


def _xla_bytes(compiled) -> int | None:
  """The buffers a compiled step holds at once: its arguments, outputs and temporaries,
  with each donated argument counted once (its output reuses its buffer)."""
  analysis = compiled.memory_analysis()
  if analysis is None:
    return None
  return int(
    analysis.temp_size_in_bytes
    + analysis.argument_size_in_bytes
    + analysis.output_size_in_bytes
    - analysis.alias_size_in_bytes
  )


def _device_peak_bytes() -> int | None:
  stats = jax.local_devices()[0].memory_stats()
  return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None


def _inputs_and_labels(cfg: ml_collections.ConfigDict, batch_size: int):
  """Random inputs [B, ...] and int labels [B] (cycling over the classes)."""
  inputs = model_lib.dummy_inputs(cfg, batch_size)
  inputs = jax.random.normal(jax.random.PRNGKey(0), inputs.shape, inputs.dtype)
  return inputs, jnp.arange(batch_size) % cfg.num_classes


def prepare_train_step(case: workloads.Case, *, dtype: str) -> tuple[Callable[[], jax.Array], dict]:
  """Compiles the training step (forward, backward, clipping, LAMB) of `case` on one
  device, with synthetic inputs held on it.

  Returns:
    (`train_once()`: runs one step and returns its loss (a device array; block on it to
    time the step), facts: `cfg` (the model config run), `forward`, `inputs`, `holder`
    (`holder["state"]`: the current train state), `num_params`, `compile_s`,
    `xla_train_flops` (None where XLA does not count), `xla_train_bytes`).
  """
  cfg = ml_collections.ConfigDict(case.model.to_dict())
  if dtype != "float32":
    cfg.compute_dtype = dtype
  forward = model_lib.build_model(cfg)
  schedule = optax.constant_schedule(1e-3)
  tx = optimizer_lib.make_optimizer(optimizer_lib.default_optimizer_config(), schedule)
  batch_size = case.batch_size
  if case.task == "masked_lm":
    inputs, labels = workloads.masked_lm_batch(cfg, batch_size)
  elif case.task == "flow":
    inputs, labels = workloads.flow_batch(cfg, batch_size)
  else:
    inputs, labels = _inputs_and_labels(cfg, batch_size)
  # Everything on the first device in pmap's layout, once: no step waits for a host
  # transfer. The step is compiled from the state's shapes, then the state is initialised
  # on the device directly (no second copy); what compiling freed, then what initialising
  # freed, goes back to the system (`host_memory.release_free_memory`). imagenet-long's peak
  # RSS: plain 2.4 -> 2.0 GiB, chunked 1.4-1.9 -> 1.0 GiB; the preparation's own peak, with
  # the release before initialising too, 0.93-1.02 -> 0.78-0.80 GiB (benchmarks/results.md).
  devices = jax.local_devices()[:1]
  init = jax.pmap(
    lambda rng: ts.init_train_state(forward, tx, rng, inputs[:1]),
    axis_name=ts.AXIS,
    devices=devices,
  )
  rngs = jax.random.PRNGKey(1)[None]
  to_device = jax.pmap(lambda tree: tree, devices=devices)
  batch = to_device(ts.replicate({"inputs": inputs, "labels": labels}, 1))
  task = tasks.get(tasks.default_config(case.task))
  step = jax.pmap(
    ts.make_train_step(forward, tx, schedule, task), axis_name=ts.AXIS, donate_argnums=(0,)
  )
  start = time.perf_counter()
  compiled = step.lower(jax.eval_shape(init, rngs), batch).compile()
  compile_s = time.perf_counter() - start
  host_memory.release_free_memory()  # else initialising adds to what compiling left
  state = jax.block_until_ready(init(rngs))
  num_params = model_lib.count_params(jax.tree.map(lambda x: x[0], state.params))
  host_memory.release_free_memory()
  holder = {"state": state}

  def train_once():
    holder["state"], metrics = compiled(holder["state"], batch)
    return metrics["loss"]

  facts = {
    "cfg": cfg,
    "forward": forward,
    "inputs": inputs,
    "holder": holder,
    "num_params": num_params,
    "compile_s": compile_s,
    "xla_train_flops": flops.xla_flops(compiled),
    "xla_train_bytes": _xla_bytes(compiled),
  }
  return train_once, facts


def measure(
  case: workloads.Case, *, dtype: str, steps: int, warmup: int, inference: bool = True
) -> dict:
  """Compiles and times the training step (forward, backward, clipping, LAMB) and the
  inference forward pass of `case` on one device, with synthetic inputs held on it."""
  train_once, facts = prepare_train_step(case, dtype=dtype)
  cfg, forward, inputs, holder = facts["cfg"], facts["forward"], facts["inputs"], facts["holder"]
  batch_size, num_params, compile_s = case.batch_size, facts["num_params"], facts["compile_s"]
  xla_train_flops = facts["xla_train_flops"]
  train_s = _median_seconds(train_once, steps, warmup)
  loss = float(np.asarray(train_once())[0])
  result = {
    "workload": case.workload,
    "label": case.label,
    "dtype": dtype,
    "batch_size": batch_size,
    "num_inputs": flops.num_inputs(cfg),
    "num_params": num_params,
    "compile_s": compile_s,
    "train_step_s": train_s,
    "train_examples_per_s": batch_size / train_s,
    "train_flops_per_example": flops.train_flops(cfg),
    "xla_train_flops_per_example": None
    if xla_train_flops is None
    else xla_train_flops / batch_size,
    "xla_train_bytes": facts["xla_train_bytes"],
    "loss": loss,
    "finite": bool(np.isfinite(loss)),
  }
  if inference:
    params, model_state = jax.tree.map(
      lambda x: x[0], (holder["state"].params, holder["state"].state)
    )
    apply = jax.jit(lambda p, s, x: forward.apply(p, s, None, x, is_training=False)[0])
    compiled_apply = apply.lower(params, model_state, inputs).compile()
    infer_s = _median_seconds(lambda: compiled_apply(params, model_state, inputs), steps, warmup)
    result.update(
      inference_s=infer_s,
      inference_examples_per_s=batch_size / infer_s,
      forward_flops_per_example=flops.forward_flops(cfg),
    )
  result["device_peak_bytes"] = _device_peak_bytes()
  result["peak_rss_bytes"] = peak_rss_bytes()
  return result


def measure_workload_case(workload: str, index: int, dtype: str, steps: int, chunk: int) -> dict:
  """`measure` of case `index` of a model workload, `steps` timed steps (0: its default)."""
  case = workloads.cases(workload, chunk)[index]
  default_steps, warmup = workloads.STEPS[workload]
  return measure(case, dtype=dtype, steps=steps or default_steps, warmup=warmup)


def measure_memory(variant: str, mode: str, batch_size: int, chunk: int, steps: int) -> dict:
  """imagenet-memory: compiles and times forward + backward (the classification task's loss,
  gradients of all parameters, no optimizer) of `variant` in one of `MEMORY_MODES`."""
  case = workloads.memory_case(variant, mode, batch_size, chunk)
  cfg = case.model
  forward = model_lib.build_model(cfg)
  task = tasks.get(tasks.default_config("classification"))
  images, labels = _inputs_and_labels(cfg, batch_size)
  params, state = forward.init(jax.random.PRNGKey(1), images[:1], is_training=True)

  def loss_fn(params, state, images, labels):
    logits, state = forward.apply(params, state, None, images, is_training=True)
    return task.loss(logits, {"labels": labels})[0], state

  step = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
  start = time.perf_counter()
  compiled = step.lower(params, state, images, labels).compile()
  compile_s = time.perf_counter() - start
  analysis = compiled.memory_analysis()
  outputs = {}

  def step_once():
    outputs["loss_and_grads"] = compiled(params, state, images, labels)
    return outputs["loss_and_grads"][1]

  step_s = _median_seconds(step_once, steps, warmup=1)
  (loss, _), grads = outputs["loss_and_grads"]
  grad_norm = float(optimizer_lib.global_norm(grads))
  return {
    "variant": variant,
    "mode": mode,
    "batch_size": batch_size,
    "chunk_size": cfg.attention_chunk_size,
    "num_params": model_lib.count_params(params),
    "xla_temp_bytes": int(analysis.temp_size_in_bytes),
    "xla_total_bytes": int(
      analysis.temp_size_in_bytes + analysis.argument_size_in_bytes + analysis.output_size_in_bytes
    ),
    "peak_rss_bytes": peak_rss_bytes(),
    "compile_s": compile_s,
    "step_s_median": step_s,
    "loss": float(loss),
    "grad_norm": grad_norm,
    "finite": bool(np.isfinite(float(loss)) and np.isfinite(grad_norm)),
  }


def measure_input_throughput(
  config: ml_collections.ConfigDict, num_images: int, steps: int
) -> dict:
  """Images/s of the ImageNet training batches of `config` (its batch size and workers)
  on `num_images` synthetic ImageNet-sized JPEGs written and built in a temporary folder."""
  from perceiver_jax.data import datasets  # noqa: PLC0415 (grain and TFDS: this workload only)
  from perceiver_jax.data.prepare import imagenet as imagenet_prepare  # noqa: PLC0415

  batch_size, workers = config.batch_size, config.data.num_workers
  with tempfile.TemporaryDirectory() as root:
    sizes = synthetic_imagenet.write_train_tar(root, num_images)
    data_dir = os.path.join(root, "tfds")
    imagenet_prepare.build(root, data_dir)
    config.data.data_dir = data_dir
    config.data.eval_split = "train"  # only the training split is built and timed
    facts = datasets.ModelFacts(model_lib.input_shapes(config.model), config.model.num_classes)
    data = datasets.load(config, facts)
    batches = data.train_batches(0, (batch_size,))
    # Workers deliver their batches in turn, so time windows of one batch per worker,
    # after the batches that the workers' start-up let pile up.
    window = max(1, workers)
    for _ in range(2 * window):
      next(batches)
    rates, cpu_rates = [], []
    for _ in range(max(1, steps // window)):
      start, cpu_start = time.perf_counter(), time.process_time()
      for _ in range(window):
        next(batches)
      rates.append(window * batch_size / (time.perf_counter() - start))
      cpu_rates.append(window * batch_size / (time.process_time() - cpu_start))
  images_per_s = statistics.median(rates)
  return {
    "workload": "imagenet-input",
    "num_workers": workers,
    "batch_size": batch_size,
    "timed_batches": len(rates) * window,
    "jpeg_kib_mean": float(np.mean(sizes)) / 1024,
    "images_per_s_median": images_per_s,
    "images_per_s_per_core": images_per_s / max(1, workers),
    # Images per CPU-second of this process, which does all the work when workers == 0:
    # the per-core speed even when other jobs share the machine.
    "images_per_cpu_s": statistics.median(cpu_rates) if workers == 0 else None,
  }


def utilisation(result: dict, peak_flops_per_s: float) -> dict:
  """Model FLOP utilisation of the train step (and inference) against a matmul peak."""
  out = {}
  if result.get("train_flops_per_example"):
    out["train_mfu"] = (
      result["train_flops_per_example"] * result["train_examples_per_s"] / peak_flops_per_s
    )
  if result.get("forward_flops_per_example") and result.get("inference_examples_per_s"):
    out["inference_mfu"] = (
      result["forward_flops_per_example"] * result["inference_examples_per_s"] / peak_flops_per_s
    )
  return out


def median_run(runs: list[dict]) -> dict:
  """Of several measurements of one case, the one with the median training step (the
  lower median for an even count), with every run's step time added.

  Cases measured in alternating rounds share the machine's slow and fast spells, so the
  ratio of two cases' medians is far steadier than that of two single runs.
  """
  if not runs:
    raise ValueError("median_run needs at least one run")
  ordered = sorted(runs, key=lambda r: r["train_step_s"])
  return {
    **ordered[(len(ordered) - 1) // 2],
    "rounds": len(runs),
    "train_step_s_runs": [r["train_step_s"] for r in runs],
  }
