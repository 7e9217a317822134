"""One measured case of the peer benchmark, kept alive between rounds (`run.py` drives it).

  python -m benchmarks.peers.worker --impl=ours --workload=io-small --dtype=float32

`--impl`: `ours` (this package's training step, `benchmarking.prepare_train_step`), `hf`
or `lucidrains` (`torch_cases.build`), or `peak` (the JAX matmul peak, then exit). The
worker builds its case, runs the warm-up steps (compilation included), then answers one
command per line on stdin:

  run N   times N training steps; answers the step times, and the system CPU seconds and
          minor page faults of the process over those steps
  quit    answers the process's peak RSS and exits

Answers are single JSON lines on stdout prefixed with `@@ ` (libraries may print too).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

from perceiver_jax import host_memory  # no JAX: the torch workers import it too

ANSWER = "@@ "


def _answer(message: dict) -> None:
  sys.stdout.write(ANSWER + json.dumps(message) + "\n")
  sys.stdout.flush()


def _ours(workload: str, dtype: str, label: str):
  import jax  # noqa: PLC0415 (the torch workers never import JAX)

  from perceiver_jax.tools import benchmark_workloads as workloads  # noqa: PLC0415
  from perceiver_jax.tools import benchmarking  # noqa: PLC0415
  from perceiver_jax.tools import flops  # noqa: PLC0415

  (case,) = [c for c in workloads.cases(workload) if c.label == label]
  train_once, facts = benchmarking.prepare_train_step(case, dtype=dtype)

  def step() -> float:
    return float(jax.block_until_ready(train_once())[0])

  info = {
    "num_params": facts["num_params"],
    "batch_size": case.batch_size,
    "train_flops_per_step": flops.train_flops(facts["cfg"]) * case.batch_size,
    "compile_s": facts["compile_s"],
    "notes": f"perceiver_jax {label}",
  }
  return step, info


def _peer(impl: str, workload: str, dtype: str, device: str):
  from benchmarks.peers import torch_cases  # noqa: PLC0415

  case = torch_cases.build(impl, workload, dtype, device=device)
  info = {
    "num_params": case.num_params,
    "batch_size": case.batch_size,
    "train_flops_per_step": case.train_flops_per_step,
    "compile_s": None,
    "notes": case.notes,
  }
  return case.step, info


def main() -> None:
  if "--impl=ours" in sys.argv:  # the training command line's malloc settings
    host_memory.use_retained_memory()
  parser = argparse.ArgumentParser()
  parser.add_argument("--impl", required=True, choices=("ours", "hf", "lucidrains", "peak"))
  parser.add_argument("--workload", default="")
  parser.add_argument("--label", default="", help="ours: the case label (default: workload)")
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--device", default="cpu", help="the torch peers' device")
  args = parser.parse_args()
  if args.impl == "peak":
    from perceiver_jax.tools import benchmarking  # noqa: PLC0415

    _answer(benchmarking.matmul_peak(args.dtype))
    return
  if args.impl == "ours":
    step, info = _ours(args.workload, args.dtype, args.label or args.workload)
  else:
    step, info = _peer(args.impl, args.workload, args.dtype, args.device)
  losses = []
  for _ in range(args.warmup):
    losses.append(step())
    host_memory.wait_for_step_cleanup()
  _answer({"ready": True, **info, "warmup_losses": losses})
  for line in sys.stdin:
    command = line.split()
    if not command:
      continue
    if command[0] == "run":
      before = resource.getrusage(resource.RUSAGE_SELF)
      times, loss = [], None
      for _ in range(int(command[1])):
        start = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - start)
        host_memory.wait_for_step_cleanup()  # between steps, not timed
      after = resource.getrusage(resource.RUSAGE_SELF)
      _answer(
        {
          "times": times,
          "loss": loss,
          "system_s": after.ru_stime - before.ru_stime,
          "user_s": after.ru_utime - before.ru_utime,
          "minor_faults": after.ru_minflt - before.ru_minflt,
        }
      )
    elif command[0] == "quit":
      # Linux reports KiB.
      _answer({"peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024})
      return


if __name__ == "__main__":
  main()
