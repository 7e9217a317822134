"""The benchmark suite's run: measures the chosen workloads, prints their tables, and writes
the results (Markdown sections and JSON). `scripts/benchmark.py` is its command line.

Every model case runs in a fresh process (so that its peak RSS is its own) and reports,
after warm-up, the median over its timed steps of the training step and the inference
forward pass (see `benchmarking.measure`), with the model FLOP utilisation against this
machine's matmul peak in the same dtype, measured in the same run.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

import jax

from perceiver_jax import atomic
from perceiver_jax.tools import benchmark_report as report
from perceiver_jax.tools import benchmark_workloads as workloads
from perceiver_jax.tools import benchmarking

WORKLOADS = (*workloads.MODEL_WORKLOADS, "imagenet-input", "imagenet-memory")
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
  command: str = "python scripts/benchmark.py"  # the stamp of the results sections

  def __post_init__(self):
    for dtype in self.dtypes:
      if dtype not in DTYPES:
        raise ValueError(f"--dtypes has {dtype!r}; expected float32 or bfloat16")
    if self.workload not in (*WORKLOADS, "all"):
      raise ValueError(f"--workload={self.workload!r}; expected all or one of {WORKLOADS}")


def _workloads(options: Options) -> list[str]:
  if options.workload != "all":
    return [options.workload]
  out = [w for w in WORKLOADS if w != "imagenet-memory"]
  if jax.default_backend() == "cpu":  # the paper models take hours per step on a CPU
    out.remove("paper-models")
  return out


def _peaks(dtypes: tuple[str, ...]) -> dict[str, dict]:
  peaks = {dtype: benchmarking.matmul_peak(dtype) for dtype in dtypes}
  for dtype, peak in peaks.items():
    print(f"matmul peak ({dtype}): {peak['flops_per_s'] / 1e9:.1f} GFLOP/s at n = {peak['size']}")
  return peaks


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
  peaks = _peaks(options.dtypes) if model_workloads else {}
  everything, sections = {"machine": machine_name, "commit": revision, "peaks": peaks}, {}
  for workload in chosen:
    if workload == "imagenet-input":
      results = [_input_result(options)]
      body = report.input_table(results[0])
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
      peak_line = ", ".join(f"{d} {p['flops_per_s'] / 1e9:.0f} GFLOP/s" for d, p in peaks.items())
      body = [f"Matmul peak measured in this run: {peak_line}.", "", *report.model_table(results)]
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
