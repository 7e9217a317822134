"""The benchmark suite's report: Markdown tables, target checks and the scaling plot, and the
sections of `benchmarks/results.md`, each stamped with the machine, the commit and the command.
"""

from __future__ import annotations

import datetime
import os
import pathlib
import platform
import subprocess

import jax

from perceiver_jax import atomic

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
MFU_TARGET = 0.75
COMPILE_TARGET_S = 5.0


def _gib(n: int | None) -> str:
  return "n/a" if n is None else f"{n / 2**30:.2f} GiB"


def _gflop(n: float | None) -> str:
  return "n/a" if n is None else f"{n / 1e9:.2f}"


def _pct(x: float | None) -> str:
  return "n/a" if x is None else f"{100 * x:.1f}%"


def machine() -> str:
  """The accelerator, or the CPU model, cores and memory, with the JAX version."""
  device = jax.local_devices()[0]
  if device.platform != "cpu":
    return f"{device.device_kind} ({device.platform}), JAX {jax.__version__}"
  cpu = platform.processor() or "CPU"
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    pass
  memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
  return f"{cpu}, {os.cpu_count()} cores, {memory:.0f} GiB, CPU only, JAX {jax.__version__}"


def commit() -> str:
  """The working tree's short commit, marked when it has uncommitted changes."""

  def git(*args):
    return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True)

  head = git("rev-parse", "--short", "HEAD").stdout.strip() or "unknown"
  dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
  return head + (" (with uncommitted changes)" if dirty else "")


def model_table(results: list[dict]) -> list[str]:
  """One row per model case: speed, FLOPs, utilisation, memory."""
  lines = [
    "| case | dtype | batch | params | compile | train step | train ex/s | train GFLOP/ex "
    "(analytic / XLA) | train MFU | inference ex/s | inference MFU | XLA step memory | "
    "peak RSS |",
    "|" + "---|" * 13,
  ]
  for r in results:
    lines.append(
      f"| {r['label']} | {r['dtype']} | {r['batch_size']} | {r['num_params']:,} | "
      f"{r['compile_s']:.1f} s | {1e3 * r['train_step_s']:.1f} ms | "
      f"{r['train_examples_per_s']:.2f} | {_gflop(r['train_flops_per_example'])} / "
      f"{_gflop(r['xla_train_flops_per_example'])} | {_pct(r.get('train_mfu'))} | "
      f"{r['inference_examples_per_s']:.2f} | {_pct(r.get('inference_mfu'))} | "
      f"{_gib(r['xla_train_bytes'])} | {_gib(r['peak_rss_bytes'])} |"
    )
  return lines


def _by_dtype(results: list[dict]) -> dict[str, list[dict]]:
  out: dict[str, list[dict]] = {}
  for r in results:
    out.setdefault(r["dtype"], []).append(r)
  return out


def summary(workload: str, results: list[dict], out_dir: pathlib.Path | None) -> list[str]:
  """Target checks and workload-specific comparisons, one line each."""
  lines = []
  if workload in ("io-small", "perceiver-small"):
    for r in results:
      met = "met" if r.get("train_mfu", 0) >= MFU_TARGET else "not met"
      lines.append(
        f"- {r['dtype']}: train MFU {_pct(r.get('train_mfu'))} (target "
        f">= {MFU_TARGET:.0%}: {met}); compile {r['compile_s']:.1f} s"
        + (
          f" (target < {COMPILE_TARGET_S:.0f} s: "
          f"{'met' if r['compile_s'] < COMPILE_TARGET_S else 'not met'})"
          if workload == "io-small"
          else ""
        )
      )
  elif workload == "imagenet-long":
    for dtype, rows in _by_dtype(results).items():
      plain, chunked = rows[0], rows[1]
      memory = chunked["xla_train_bytes"] / plain["xla_train_bytes"]
      speed = chunked["train_step_s"] / plain["train_step_s"]
      lines.append(
        f"- {dtype}: chunked / plain XLA step memory {memory:.3f} (target <= 0.25: "
        f"{'met' if memory <= 0.25 else 'not met'}); step time {speed:.2f}x (target <= 1: "
        f"{'met' if speed <= 1.0 else 'not met'}); peak RSS "
        f"{_gib(plain['peak_rss_bytes'])} -> {_gib(chunked['peak_rss_bytes'])}"
      )
      if plain.get("rounds", 1) > 1:
        runs = "; ".join(
          f"{r['label']} " + ", ".join(f"{1e3 * t:.0f}" for t in r["train_step_s_runs"]) + " ms"
          for r in (plain, chunked)
        )
        lines.append(f"  - {dtype} step times of the {plain['rounds']} alternating rounds: {runs}")
  elif workload == "scaling":
    lines += [
      "",
      "| model | dtype | M | train step | time(M) / time(M/4) |",
      "|---|---|---|---|---|",
    ]
    for dtype, rows in _by_dtype(results).items():
      for kind in ("perceiver", "transformer"):
        series = [r for r in rows if r["label"].startswith(kind)]
        previous = None
        for r in series:
          ratio = "" if previous is None else f"{r['train_step_s'] / previous:.2f}"
          lines.append(
            f"| {kind} | {dtype} | {r['num_inputs']:,} | {1e3 * r['train_step_s']:.1f} ms | "
            f"{ratio} |"
          )
          previous = r["train_step_s"]
        if kind == "perceiver":
          ratios = [
            b["train_step_s"] / a["train_step_s"]
            for a, b in zip(series, series[1:], strict=False)
            if b["num_inputs"] > 4096
          ]
          if ratios:
            lines.insert(
              0,
              f"- {dtype}: Perceiver time(4M) / time(M) for M >= 4,096 at most "
              f"{max(ratios):.2f} (target <= 4.4: {'met' if max(ratios) <= 4.4 else 'not met'})",
            )
    if out_dir is not None:
      path = out_dir / "scaling.png"
      _scaling_plot(results, path)
      lines += ["", f"![train-step time against inputs]({path.name})"]
  return lines


def _scaling_plot(results: list[dict], path: pathlib.Path) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(6, 4))
  for dtype, rows in _by_dtype(results).items():
    for kind, marker in (("perceiver", "o"), ("transformer", "s")):
      series = [r for r in rows if r["label"].startswith(kind)]
      if series:
        ax.loglog(
          [r["num_inputs"] for r in series],
          [r["train_step_s"] for r in series],
          marker=marker,
          label=f"{kind} ({dtype})",
        )
  ax.set_xlabel("inputs M")
  ax.set_ylabel("train step (s), batch 2")
  ax.set_title("Train-step time against input size")
  ax.grid(True, which="both", alpha=0.3)
  ax.legend()
  fig.tight_layout()
  with atomic.atomic_write(str(path), "wb") as f:
    fig.savefig(f, format="png", dpi=100)
  plt.close(fig)


def section(title: str, body: list[str], command: str, machine_name: str, revision: str) -> str:
  """A `## title` section: the stamp (machine, commit, date, command), then `body`."""
  stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
  return "\n".join(
    [
      f"## {title}",
      "",
      f"Machine: {machine_name}. Commit: {revision}. Date: {stamp}.",
      f"Command: `{command}`.",
      "",
      *body,
      "",
    ]
  )


def input_table(result: dict) -> list[str]:
  """imagenet-input: the input pipeline's images/s."""
  return [
    "| workers | batch | timed batches | mean JPEG | images/s | per core | per CPU-second |",
    "|---|---|---|---|---|---|---|",
    f"| {result['num_workers']} | {result['batch_size']} | {result['timed_batches']} | "
    f"{result['jpeg_kib_mean']:.0f} KiB | {result['images_per_s_median']:.1f} | "
    f"{result['images_per_s_per_core']:.1f} | "
    f"{result['images_per_cpu_s'] or float('nan'):.1f} |",
  ]


def memory_table(results: list[dict]) -> list[str]:
  """imagenet-memory: one row per mode."""
  lines = [
    "| mode | XLA temp | XLA total | peak RSS | compile | step (median) | loss |",
    "|" + "---|" * 7,
  ]
  for r in results:
    lines.append(
      f"| {r['mode']} | {_gib(r['xla_temp_bytes'])} | {_gib(r['xla_total_bytes'])} | "
      f"{_gib(r['peak_rss_bytes'])} | {r['compile_s']:.1f} s | {r['step_s_median']:.1f} s | "
      f"{r['loss']:.4f} |"
    )
  return lines


def update_results(path: str, sections: dict[str, str]) -> None:
  """Replaces (or appends) each `## title` section of the Markdown file at `path`."""
  text = (
    pathlib.Path(path).read_text()
    if os.path.exists(path)
    else (
      "# Benchmarks\n\nWritten by `scripts/benchmark.py --results=benchmarks/results.md`; each "
      "section names its machine, commit and command.\n\n"
    )
  )
  for title, section in sections.items():
    heading = f"## {title}\n"
    if heading in text:
      start = text.index(heading)
      end = text.find("\n## ", start + len(heading))
      text = text[:start] + section + ("" if end < 0 else text[end + 1 :])
    else:
      text = text.rstrip("\n") + "\n\n" + section
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with atomic.atomic_write(path, "w") as f:
    f.write(text)
