"""Side-by-side speed of this package and the PyTorch Perceivers, interleaved in one run.

  bash benchmarks/peers/setup.sh      # once: .venv-peers with torch, transformers,
                                      # perceiver-pytorch, pytorch-optimizer and this package
  .venv-peers/bin/python benchmarks/peers/run.py --results=benchmarks/results.md

For each workload and dtype, every implementation runs in a process of its own
(`worker.py`), built and warmed up once; then the processes take turns, `--rounds` times,
each timing `--steps` training steps while the others wait (A B A B ...), so that a slow
or fast spell of the machine falls on all of them. Identical shapes and optimizer (LAMB,
global-norm clipping at 10) on each side; where a peer's layout differs from ours
(lucidrains' GEGLU feed-forwards), compare achieved FLOP/s, with both sides' FLOPs counted
the same way (matrix multiplies, 2 per multiply-add, training = 3 x forward).

Writes the section "## peers" (`--section` names another) of `--results`, replacing an
earlier one of that heading, and, with `--json`, every measurement.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import shlex
import statistics
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.peers import worker  # noqa: E402

# workload -> the implementations measured side by side: (impl, our case label or "").
GROUPS = {
  "io-small": (("ours", "io-small"), ("hf", "")),
  "perceiver-small": (("ours", "perceiver-small"), ("lucidrains", "")),
  "imagenet-long": (("ours", "plain"), ("ours", "chunked 4096"), ("hf", "")),
  # The release's ImageNet Perceiver IO: the GPU comparison (scripts/gpu_benchmark.sh).
  "imagenet-io": (("ours", "imagenet-io"), ("hf", "")),
}
CPU_WORKLOADS = ("io-small", "perceiver-small", "imagenet-long")
SECTION = "## peers"


class Worker:
  """A running `worker.py` and its answers."""

  def __init__(
    self, impl: str, workload: str, label: str, dtype: str, warmup: int, device: str = "cpu"
  ):
    self.impl, self.workload, self.label, self.dtype = impl, workload, label, dtype
    self.name = f"{impl} {label}".strip() if impl == "ours" else impl
    command = [sys.executable, "-m", "benchmarks.peers.worker", f"--impl={impl}"]
    command += [f"--workload={workload}", f"--dtype={dtype}", f"--warmup={warmup}"]
    command.append(f"--device={device}")
    if label:
      command.append(f"--label={label}")
    self.process = subprocess.Popen(
      command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    self.rounds: list[dict] = []

  def read(self) -> dict:
    for line in self.process.stdout:
      if line.startswith(worker.ANSWER):
        return json.loads(line[len(worker.ANSWER) :])
    raise RuntimeError(f"worker {self.name} ({self.workload}, {self.dtype}) exited early")

  def send(self, command: str) -> dict:
    self.process.stdin.write(command + "\n")
    self.process.stdin.flush()
    return self.read()


def _peak(dtype: str) -> dict:
  output = subprocess.run(
    [sys.executable, "-m", "benchmarks.peers.worker", "--impl=peak", f"--dtype={dtype}"],
    cwd=ROOT,
    check=True,
    capture_output=True,
    text=True,
  ).stdout
  (line,) = [x for x in output.splitlines() if x.startswith(worker.ANSWER)]
  return json.loads(line[len(worker.ANSWER) :])


def measure_group(
  workload: str,
  dtype: str,
  rounds: int,
  steps: int,
  warmup: int,
  impls=("ours", "hf", "lucidrains"),
  device: str = "cpu",
) -> list[dict]:
  """Every implementation of `workload` in `dtype` (of `impls`), in alternating rounds."""
  workers = []
  for impl, label in [
    x for x in GROUPS[workload] if x[0] in impls
  ]:  # one at a time: start-up is not timed
    w = Worker(impl, workload, label, dtype, warmup, device)
    w.info = w.read()
    print(f"  {w.name}: ready ({w.info['num_params']:,} parameters)", flush=True)
    workers.append(w)
  for r in range(rounds):
    order = workers if r % 2 == 0 else workers[::-1]
    for w in order:
      w.rounds.append(w.send(f"run {steps}"))
  results = []
  for w in workers:
    peak_rss = w.send("quit")["peak_rss_bytes"]
    w.process.wait()
    times = [t for one in w.rounds for t in one["times"]]
    step_s = statistics.median(times)
    count = len(times)
    results.append(
      {
        "workload": workload,
        "dtype": dtype,
        "impl": w.name,
        **w.info,
        "step_s_median": step_s,
        "step_s_round_medians": [statistics.median(one["times"]) for one in w.rounds],
        "steps_timed": count,
        "system_s_per_step": sum(one["system_s"] for one in w.rounds) / count,
        "user_s_per_step": sum(one["user_s"] for one in w.rounds) / count,
        "minor_faults_per_step": sum(one["minor_faults"] for one in w.rounds) / count,
        "achieved_flops_per_s": w.info["train_flops_per_step"] / step_s,
        "last_loss": w.rounds[-1]["loss"],
        "peak_rss_bytes": peak_rss,
      }
    )
    print(f"  {w.name}: {step_s * 1e3:.0f} ms a step", flush=True)
  return results


def _machine() -> str:
  model = platform.processor() or "unknown CPU"
  try:
    for line in open("/proc/cpuinfo"):
      if line.startswith("model name"):
        model = line.split(":", 1)[1].strip()
        break
  except OSError:
    pass
  return f"{model}, {os.cpu_count()} cores"


def _commit() -> str:
  try:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "-uno"], cwd=ROOT, capture_output=True)
    return out.stdout.decode().strip() + ("+changes" if dirty.stdout.strip() else "")
  except OSError:
    return "unknown"


def table(results: list[dict], peaks: dict) -> str:
  """The Markdown section: one row per implementation, the ratio to ours beside it."""
  lines = [
    "| workload | dtype | implementation | params | batch | train step (median) "
    "| its step / ours (our FLOP/s / its) "
    "| GFLOP a step | achieved GFLOP/s | MFU | peak RSS | system ms / step | page faults / step |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for r in results:
    ours = [x for x in results if x["workload"] == r["workload"] and x["dtype"] == r["dtype"]]
    ours = [x for x in ours if x["impl"].startswith("ours")][:1]  # the first of ours
    faster = ""  # no ratio beside ours, nor without ours (`--impls` left it out)
    if ours and r is not ours[0]:
      ratio = r["step_s_median"] / ours[0]["step_s_median"]
      flop_ratio = ours[0]["achieved_flops_per_s"] / r["achieved_flops_per_s"]
      faster = f"{ratio:.2f}x (FLOP/s {flop_ratio:.2f}x)"
    mfu = r["achieved_flops_per_s"] / peaks[r["dtype"]]["flops_per_s"]
    lines.append(
      f"| {r['workload']} | {r['dtype']} | {r['impl']} | {r['num_params']:,} | {r['batch_size']} "
      f"| {r['step_s_median'] * 1e3:,.0f} ms | {faster} | {r['train_flops_per_step'] / 1e9:,.1f} "
      f"| {r['achieved_flops_per_s'] / 1e9:,.0f} | {mfu:.1%} "
      f"| {r['peak_rss_bytes'] / 2**30:.2f} GiB "
      f"| {r['system_s_per_step'] * 1e3:,.0f} | {r['minor_faults_per_step']:,.0f} |"
    )
  return "\n".join(lines)


def write_section(path: pathlib.Path, section: str) -> None:
  """Replaces (or appends) the section of the Markdown file at `path` whose heading is
  `section`'s first line."""
  text = path.read_text() if path.exists() else "# Benchmarks\n"
  heading = section.split("\n", 1)[0]
  start = text.find(heading + "\n")
  if start >= 0:
    end = text.find("\n## ", start + len(heading))
    text = text[:start] + section + ("" if end < 0 else text[end:])
  else:
    text = text.rstrip("\n") + "\n\n" + section
  tmp = path.with_suffix(path.suffix + ".tmp")
  tmp.write_text(text if text.endswith("\n") else text + "\n")
  os.replace(tmp, path)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workloads", default=",".join(CPU_WORKLOADS), help=f"of {list(GROUPS)}")
  parser.add_argument("--device", default="cpu", help="the peers' torch device (cpu, cuda)")
  parser.add_argument("--dtypes", default="float32,bfloat16")
  parser.add_argument("--impls", default="ours,hf,lucidrains", help="the implementations run")
  parser.add_argument("--rounds", type=int, default=4)
  parser.add_argument("--steps", type=int, default=5, help="timed steps per round")
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--results", default="", help="Markdown file to write the section into")
  parser.add_argument("--json", default="", help="file for every measurement")
  parser.add_argument(
    "--section",
    default=SECTION[3:],
    help="the heading of the section written, e.g. 'peers (AMD EPYC)' for another machine",
  )
  args = parser.parse_args(argv)
  workloads = [w for w in args.workloads.split(",") if w]
  dtypes = [d for d in args.dtypes.split(",") if d]
  for w in workloads:
    if w not in GROUPS:
      parser.error(f"unknown workload {w!r}; expected some of {list(GROUPS)}")
  peaks = {dtype: _peak(dtype) for dtype in dtypes}
  for dtype, peak in peaks.items():
    print(f"matmul peak ({dtype}): {peak['flops_per_s'] / 1e9:.0f} GFLOP/s at n = {peak['size']}")
  results = []
  for workload in workloads:
    for dtype in dtypes:
      print(f"{workload} {dtype}:", flush=True)
      results += measure_group(
        workload,
        dtype,
        args.rounds,
        args.steps,
        args.warmup,
        args.impls.split(","),
        args.device,
      )
  command = "python benchmarks/peers/run.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
  import jax  # noqa: PLC0415

  versions = f"JAX {jax.__version__}"
  try:
    import torch  # noqa: PLC0415 (versions for the stamp)
    import transformers  # noqa: PLC0415

    versions += f", torch {torch.__version__} ({torch.get_num_threads()} threads)"
    versions += f", transformers {transformers.__version__}"
  except ImportError:
    pass
  rates = ", ".join(f"{d} {p['flops_per_s'] / 1e9:.0f} GFLOP/s" for d, p in peaks.items())
  from perceiver_jax.tools import benchmarking  # noqa: PLC0415

  section = "\n".join(
    [
      "## " + args.section,
      "",
      f"Machine: {_machine()}. Commit: {_commit()}. "
      f"Date: {datetime.date.today().isoformat()}. {versions}.",
      f"Command: `{command}` ({args.rounds} alternating rounds of {args.steps} steps per "
      "implementation, after "
      f"{args.warmup} warm-up steps; the median over all timed steps).",
      "",
      f"Matmul peak measured in this run (JAX): {rates} ({benchmarking.peak_method()}). "
      "MFU = analytic FLOPs a step / median step time / that peak. bfloat16: ours computes in "
      "bfloat16 with float32 accumulation (`compute_dtype=bfloat16`); the peers run their "
      'float32 model under `torch.autocast("cpu", torch.bfloat16)`.',
      "",
      table(results, peaks),
      "",
      "Each peer's layout: "
      + "; ".join(sorted({f"{r['impl']} {r['workload']}: {r['notes']}" for r in results})),
      "",
    ]
  )
  print(section)
  if args.results:
    write_section(pathlib.Path(args.results), section)
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps({"peaks": peaks, "results": results}, indent=1))


if __name__ == "__main__":
  main()
