"""The benchmark suite's run: measures the chosen workloads, prints their tables, and writes
the results (Markdown sections and JSON). `scripts/benchmark.py` is its command line.

Every model case runs in a fresh process (so that its peak RSS is its own) and reports,
after warm-up, the median over its timed steps of the training step and the inference
forward pass (see `benchmarking.measure`), with the model FLOP utilisation against this
machine's matmul peak in the same dtype, measured in the same run.

flow-tiled (`measure_tiled`) times whole frame pairs through the optical-flow CLI's tiled
inference (`flow_inference.tile_model` + `predict_pair`: normalising, tiling, the model's
calls, stitching): the median over the timed pairs after warm-up, in pairs/s, with the model
FLOP utilisation of the pair's tiles (padding tiles of the last call not counted).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import statistics
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from perceiver_jax import atomic
from perceiver_jax import model as model_lib
from perceiver_jax.data import flow_procedural
from perceiver_jax.tools import benchmark_report as report
from perceiver_jax.tools import benchmark_workloads as workloads
from perceiver_jax.tools import benchmarking
from perceiver_jax.tools import flops
from perceiver_jax.tools import flow_inference
from perceiver_jax.tools import flow_tiles

WORKLOADS = (*workloads.MODEL_WORKLOADS, "flow-tiled", "imagenet-input", "imagenet-memory")
DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class Options:
  """What to measure and where the results go (the command line's flags)."""

  workload: str = "all"  # one of WORKLOADS, or all (every one but imagenet-memory)
  dtypes: tuple[str, ...] = ("float32",)
  json: str | None = None
  results: str | None = None  # a Markdown file whose workload sections are replaced
  steps: int = 0  # timed steps per case; 0: the workload's default
  rounds: int = 0  # alternating measurements per case; 0: the workload's default
  chunk_size: int = 4096  # key chunk size of chunked cross-attention
  # imagenet-memory
  batch_size: int = 2
  variant: str = "perceiver_ff"
  # imagenet-input
  num_images: int = 256
  input_batch_size: int = 32
  input_steps: int = 16
  num_workers: int = 0
  # flow-tiled: its models, and tiles per call (empty: the platform's `TILE_BATCH_SIZES`)
  tiled_models: tuple[str, ...] = workloads.TILED_MODELS
  tile_batch_sizes: tuple[int, ...] = ()
  command: str = "python scripts/benchmark.py"  # the stamp of the results sections

  def __post_init__(self):
    for dtype in self.dtypes:
      if dtype not in DTYPES:
        raise ValueError(f"--dtypes has {dtype!r}; expected float32 or bfloat16")
    if self.workload not in (*WORKLOADS, "all"):
      raise ValueError(f"--workload={self.workload!r}; expected all or one of {WORKLOADS}")
    for model in self.tiled_models:
      if model not in workloads.TILED_MODELS:
        raise ValueError(f"--tiled_models has {model!r}; expected {workloads.TILED_MODELS}")
    for size in self.tile_batch_sizes:
      if size < 1:
        raise ValueError(f"--tile_batch_sizes has {size}; expected positive sizes")


def _workloads(options: Options) -> list[str]:
  if options.workload != "all":
    return [options.workload]
  out = [w for w in WORKLOADS if w != "imagenet-memory"]
  if jax.default_backend() == "cpu":  # the paper models take hours per step on a CPU,
    out.remove("paper-models")  # the released flow model minutes per tile
    out.remove("flow-tiled")
  return out


def _platform() -> str:
  return "cpu" if jax.default_backend() == "cpu" else "accelerator"


def _peaks(dtypes: tuple[str, ...]) -> dict[str, dict]:
  peaks = {dtype: benchmarking.matmul_peak(dtype) for dtype in dtypes}
  for dtype, peak in peaks.items():
    print(f"matmul peak ({dtype}): {peak['flops_per_s'] / 1e9:.1f} GFLOP/s at n = {peak['size']}")
  return peaks


def _peak_line(peaks: dict) -> str:
  rates = ", ".join(f"{d} {p['flops_per_s'] / 1e9:.0f} GFLOP/s" for d, p in peaks.items())
  return f"Matmul peak measured in this run: {rates} ({benchmarking.peak_method()})."


def _model_workload(workload: str, options: Options, peaks: dict) -> list[dict]:
  """Each case in its own process, in `rounds` alternating rounds per dtype."""
  results = []
  rounds = options.rounds or workloads.ROUNDS.get(workload, 1)
  for dtype in options.dtypes:
    cases = workloads.cases(workload, options.chunk_size)
    runs = [[] for _ in cases]
    for round_index in range(rounds):
      for index, case in enumerate(cases):
        where = f", round {round_index + 1} of {rounds}" if rounds > 1 else ""
        print(f"[{workload}] {case.label} ({dtype}{where}) ...", flush=True)
        runs[index].append(
          benchmarking.in_fresh_process(
            benchmarking.measure_workload_case,
            workload,
            index,
            dtype,
            options.steps,
            options.chunk_size,
          )
        )
    for case_runs in runs:
      result = benchmarking.median_run(case_runs)
      result.update(benchmarking.utilisation(result, peaks[dtype]["flops_per_s"]))
      results.append(result)
  return results


def measure_tiled(
  case: workloads.TiledCase, *, dtype: str, pairs: int, warmup: int, seed: int = 0
) -> dict:
  """Times `pairs` frame pairs of `case.frame_size` (after `warmup` pairs, which compile the
  model) through `flow_inference.tile_model` + `predict_pair` in compute dtype `dtype`: one
  generated pair (`flow_procedural.make_pair`), fresh random parameters (speed does not
  depend on their values; the output layer starts at zero, so the flow is zero)."""
  if pairs < 1 or warmup < 0:
    raise ValueError(f"flow-tiled pairs={pairs}, warmup={warmup}: need pairs >= 1, warmup >= 0")
  cfg = ml_collections.ConfigDict(case.model.to_dict())
  cfg.compute_dtype = dtype
  tile = flow_inference.model_tile(cfg)
  forward = model_lib.build_model(cfg)
  # Jitted, so that the forward pass that Haiku's init traces is never run.
  params, state = jax.jit(
    lambda rng: forward.init(rng, model_lib.dummy_inputs(cfg, 1), is_training=False)
  )(jax.random.PRNGKey(1))
  # The XLA footprint of one call (`tile_model` compiles the same program on first use).
  apply = jax.jit(lambda p, s, x: forward.apply(p, s, None, x, is_training=False)[0])
  example = jnp.zeros((case.batch_size, *cfg.input_shape), jnp.float32)
  start = time.perf_counter()
  analysis = apply.lower(params, state, example).compile().memory_analysis()
  compile_s = time.perf_counter() - start
  fn = flow_inference.tile_model(forward, params, state, case.batch_size)
  scene = flow_procedural.scene_config(flow_procedural.default_config())
  pair = flow_procedural.make_pair(np.random.default_rng(seed), case.frame_size, scene)

  def one_pair() -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    flow = flow_inference.predict_pair(
      fn, pair["frame1"], pair["frame2"], tile, case.overlap, case.batch_size
    )
    return time.perf_counter() - start, flow

  warmup_s = [one_pair()[0] for _ in range(warmup)]
  runs = [one_pair() for _ in range(pairs)]
  pair_s = statistics.median(t for t, _ in runs)
  num_tiles = len(flow_tiles.tile_origins(case.frame_size, tile, case.overlap))
  forward_flops = flops.forward_flops(cfg)
  return {
    "workload": case.workload,
    "label": case.label,
    "dtype": dtype,
    "batch_size": case.batch_size,
    "tile": list(tile),
    "frame_size": list(case.frame_size),
    "num_tiles": num_tiles,
    "num_params": model_lib.count_params(params),
    "compile_s": compile_s,
    "first_pair_s": warmup_s[0] if warmup_s else None,
    "pair_s": pair_s,
    "pair_s_runs": [t for t, _ in runs],
    "pairs_per_s": 1.0 / pair_s,
    "tiles_per_s": num_tiles / pair_s,
    "forward_flops_per_tile": forward_flops,
    "flops_per_pair": num_tiles * forward_flops,
    "xla_temp_bytes": None if analysis is None else int(analysis.temp_size_in_bytes),
    "xla_call_bytes": None
    if analysis is None
    else int(
      analysis.temp_size_in_bytes + analysis.argument_size_in_bytes + analysis.output_size_in_bytes
    ),
    "device_peak_bytes": benchmarking._device_peak_bytes(),
    "peak_rss_bytes": benchmarking.peak_rss_bytes(),
    "flow_shape": list(runs[-1][1].shape),
    "finite": bool(np.all(np.isfinite(runs[-1][1]))),
  }


def measure_tiled_case(model: str, batch_size: int, dtype: str, pairs: int) -> dict:
  """`measure_tiled` of flow-tiled's case of `model` at `batch_size`, `pairs` timed pairs
  (0: the platform's default) after the platform's warm-up pairs."""
  default_pairs, warmup = workloads.TILED_PAIRS[_platform()]
  case = workloads.tiled_case(model, batch_size)
  return measure_tiled(case, dtype=dtype, pairs=pairs or default_pairs, warmup=warmup)


def _tiled_results(options: Options, peaks: dict) -> list[dict]:
  """flow-tiled: each model at each tile batch size in each dtype, each in its own process."""
  batch_sizes = options.tile_batch_sizes or workloads.TILE_BATCH_SIZES[_platform()]
  results = []
  for dtype in options.dtypes:
    for model in options.tiled_models:
      for batch_size in batch_sizes:
        print(f"[flow-tiled] {model} batch {batch_size} ({dtype}) ...", flush=True)
        result = benchmarking.in_fresh_process(
          measure_tiled_case, model, batch_size, dtype, options.steps
        )
        peak = peaks[dtype]["flops_per_s"]
        result["mfu"] = result["flops_per_pair"] * result["pairs_per_s"] / peak
        results.append(result)
  return results


def tiled_table(results: list[dict]) -> list[str]:
  """flow-tiled: one row per model, tile batch size and dtype."""
  lines = [
    "| case | dtype | params | frames | tiles | compile | first pair | pair (median of n) | "
    "pairs/s | tiles/s | GFLOP/tile | MFU | XLA call memory | peak RSS |",
    "|" + "---|" * 14,
  ]
  for r in results:
    first = "n/a" if r["first_pair_s"] is None else f"{r['first_pair_s']:.2f} s"
    lines.append(
      f"| {r['label']} | {r['dtype']} | {r['num_params']:,} | "
      f"{r['frame_size'][0]} x {r['frame_size'][1]} | "
      f"{r['num_tiles']} of {r['tile'][0]} x {r['tile'][1]} | {r['compile_s']:.1f} s | "
      f"{first} | {r['pair_s']:.2f} s (n = {len(r['pair_s_runs'])}) | "
      f"{r['pairs_per_s']:.3f} | {r['tiles_per_s']:.3f} | "
      f"{r['forward_flops_per_tile'] / 1e9:.1f} | {report._pct(r.get('mfu'))} | "
      f"{report._gib(r['xla_call_bytes'])} | {report._gib(r['peak_rss_bytes'])} |"
    )
  return lines


def _input_result(options: Options) -> dict:
  from configs import imagenet as imagenet_config  # noqa: PLC0415 (the repository's configs)

  config = imagenet_config.get_config("variant=io_fourier")
  config.batch_size = options.input_batch_size
  config.data.num_workers = options.num_workers
  config.data.num_threads = 1
  return benchmarking.measure_input_throughput(config, options.num_images, options.input_steps)


def run(options: Options) -> dict:
  """Measures `options.workload`; returns everything measured (what `options.json` gets)."""
  chosen = _workloads(options)
  out_dir = pathlib.Path(options.results).parent if options.results else None
  machine_name, revision = report.machine(), report.commit()  # before anything runs
  model_workloads = set(chosen) & set(workloads.MODEL_WORKLOADS)
  peaks = _peaks(options.dtypes) if model_workloads or "flow-tiled" in chosen else {}
  everything, sections = {"machine": machine_name, "commit": revision, "peaks": peaks}, {}
  for workload in chosen:
    if workload == "imagenet-input":
      results = [_input_result(options)]
      body = report.input_table(results[0])
    elif workload == "flow-tiled":
      results = _tiled_results(options, peaks)
      body = [_peak_line(peaks), "", *tiled_table(results)]
    elif workload == "imagenet-memory":
      results = [
        benchmarking.in_fresh_process(
          benchmarking.measure_memory,
          options.variant,
          mode,
          options.batch_size,
          options.chunk_size,
          options.steps or 2,
        )
        for mode in workloads.MEMORY_MODES
      ]
      body = report.memory_table(results)
    else:
      results = _model_workload(workload, options, peaks)
      body = [_peak_line(peaks), "", *report.model_table(results)]
      body += report.summary(workload, results, out_dir)
    print("\n".join(body), flush=True)
    everything[workload] = results
    sections[workload] = report.section(workload, body, options.command, machine_name, revision)
  if options.results:
    report.update_results(options.results, sections)
  if options.json:
    with atomic.atomic_write(options.json, "w") as f:
      json.dump(everything, f, indent=2)
  return everything
