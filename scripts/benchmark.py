"""The benchmark suite: training and inference speed, FLOP utilisation, memory, compile time
and input-pipeline speed, on fixed workloads that compare across commits.

  python scripts/benchmark.py                                   # the whole suite
  python scripts/benchmark.py --workload=io-small [--dtypes=float32,bfloat16]
  python scripts/benchmark.py --workload=all --results=benchmarks/results.md --json=OUT.json

Workloads (`perceiver_jax/tools/benchmarking.py` defines their shapes):
  io-small, perceiver-small   small Perceiver IO / Perceiver models on 4,096 x 261 inputs,
                              batch 8.
  imagenet-long               224x224 inputs (50,176), 512 x 1024 latents, batch 2: plain vs
                              chunked cross-attention.
  scaling                     train-step time for M = 1,024 ... 65,536 inputs, next to a
                              Transformer encoder on the same inputs; writes a plot.
  paper-models                the registry's paper models at their real shapes, batch 1
                              (part of `all` only on an accelerator).
  imagenet-input              the ImageNet training input pipeline alone (decode, crop,
                              RandAugment, MixUp/CutMix) on synthetic JPEGs, images/s.
  imagenet-memory             forward + backward of the full ImageNet Perceiver at batch 2 in
                              plain, chunked and chunked + remat modes (not part of `all`).
  all                         every workload above except imagenet-memory.

Every model case runs in a fresh process (so that its peak RSS is its own) and reports,
after warm-up, the median over `--steps` steps of: the training step (forward, backward,
global-norm clipping and LAMB, on one device, inputs already on the device) and the
inference forward pass, in examples/s; FLOPs per example, analytic (matrix multiplies, 2 per
multiply-add, training = 3 x forward) and from XLA's cost analysis; the model FLOP
utilisation (analytic FLOP/s over this machine's matmul peak in the same dtype, measured in
the same run: the best n x n x n product); the step's XLA buffer footprint (arguments +
outputs + temporaries), the peak device memory on an accelerator, the process's peak RSS;
and the compile time of the training step.

`--results=FILE` replaces each measured workload's section of that Markdown file (creating
it if needed), stamped with the machine, the commit and the command.
"""

from __future__ import annotations

import datetime
import io
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time

from absl import app
from absl import flags

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # the working tree's package and `configs`, not an install

from perceiver_jax import atomic  # noqa: E402
from perceiver_jax.tools import benchmarking  # noqa: E402

MODEL_WORKLOADS = (*benchmarking.WORKLOADS, "paper-models")
ALL_WORKLOADS = (*MODEL_WORKLOADS, "imagenet-input", "imagenet-memory")
_WORKLOAD = flags.DEFINE_enum("workload", "all", [*ALL_WORKLOADS, "all"], "What to measure.")
_DTYPES = flags.DEFINE_list("dtypes", ["float32"], "Compute dtypes: float32, bfloat16.")
_JSON = flags.DEFINE_string("json", None, "Also write the results to this JSON file.")
_RESULTS = flags.DEFINE_string("results", None, "Update this Markdown results file.")
_STEPS = flags.DEFINE_integer("steps", 0, "Timed steps per case; 0: the workload's default.")
_ROUNDS = flags.DEFINE_integer(
  "rounds", 0, "Alternating measurements per case (median kept); 0: the workload's default."
)
_CHUNK = flags.DEFINE_integer("chunk_size", 4096, "Key chunk size of chunked cross-attention.")
_CASE = flags.DEFINE_string("case", None, "Internal: measure WORKLOAD:INDEX in this process.")
# imagenet-memory
_BATCH = flags.DEFINE_integer("batch_size", 2, "imagenet-memory: batch size.")
_VARIANT = flags.DEFINE_string("variant", "perceiver_ff", "imagenet-memory: registry variant.")
_MODE = flags.DEFINE_string("mode", None, "Internal: run one imagenet-memory mode.")
# imagenet-input
_NUM_IMAGES = flags.DEFINE_integer("num_images", 256, "imagenet-input: synthetic JPEGs.")
_INPUT_BATCH = flags.DEFINE_integer("input_batch_size", 32, "imagenet-input: batch size.")
_INPUT_STEPS = flags.DEFINE_integer("input_steps", 16, "imagenet-input: timed batches.")
_NUM_WORKERS = flags.DEFINE_integer("num_workers", 0, "imagenet-input: grain worker processes.")

# (timed steps, warm-up steps) per workload.
STEPS = {
  "io-small": (20, 3),
  "perceiver-small": (20, 3),
  "imagenet-long": (5, 1),
  "scaling": (5, 2),
  "paper-models": (3, 1),
}
PAPER_MODELS = (
  "io_fourier",
  "io_conv",
  "io_learned",
  "perceiver_ff",
  "perceiver_learned",
  "modelnet40",
)
# imagenet-long's target is a ratio of two cases: measured in 3 alternating rounds.
ROUNDS = {"imagenet-long": 3}
MFU_TARGET = 0.75
COMPILE_TARGET_S = 5.0

MODES = {
  "plain": {"attention_chunk_size": 0, "remat": False},
  "chunked": {"attention_chunk_size": None, "remat": False},
  "chunked+remat": {"attention_chunk_size": None, "remat": True},
}


def _cases(workload: str) -> list[benchmarking.Case]:
  if workload == "paper-models":
    from perceiver_jax import registry

    return [
      benchmarking.Case(workload, name, registry.get_model_config(name), 1) for name in PAPER_MODELS
    ]
  return benchmarking.cases(workload, _CHUNK.value)


def _measure_case(spec: str, dtype: str) -> dict:
  workload, index = spec.rsplit(":", 1)
  case = _cases(workload)[int(index)]
  steps, warmup = STEPS[workload]
  return benchmarking.measure(case, dtype=dtype, steps=_STEPS.value or steps, warmup=warmup)


def _run_self(*args: str) -> dict:
  """Runs this script with `args` in a fresh process; returns the JSON of its last line."""
  proc = subprocess.run(
    [sys.executable, os.path.abspath(__file__), *args], capture_output=True, text=True
  )
  if proc.returncode:
    tail = proc.stderr.strip().splitlines()[-1:] or ["(no output)"]
    raise RuntimeError(f"benchmark run {' '.join(args)} failed: {tail[0]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def _run_case_in_subprocess(workload: str, index: int, dtype: str) -> dict:
  return _run_self(
    f"--case={workload}:{index}",
    f"--dtypes={dtype}",
    f"--steps={_STEPS.value}",
    f"--chunk_size={_CHUNK.value}",
  )


def measure_train_step_memory(variant: str, mode: str, batch_size: int, chunk: int, steps: int):
  """Compiles and runs forward + backward of `variant` in the current process."""
  import haiku as hk
  import jax
  import jax.numpy as jnp
  import numpy as np

  from perceiver_jax import model
  from perceiver_jax import registry

  cfg = registry.get_model_config(variant)
  for key, value in MODES[mode].items():
    cfg[key] = chunk if value is None else value
  forward = model.build_model(cfg)
  images = jax.random.normal(jax.random.PRNGKey(0), (batch_size, *cfg.input_shape))
  labels = jnp.arange(batch_size) % cfg.num_classes
  params, state = forward.init(jax.random.PRNGKey(1), images[:1], is_training=True)

  def loss_fn(params, state, images, labels):
    logits, state = forward.apply(params, state, None, images, is_training=True)
    onehot = jax.nn.one_hot(labels, logits.shape[-1])
    return -jnp.mean(jnp.sum(onehot * jax.nn.log_softmax(logits), axis=-1)), state

  step = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
  start = time.perf_counter()
  compiled = step.lower(params, state, images, labels).compile()
  compile_s = time.perf_counter() - start
  analysis = compiled.memory_analysis()
  times = []
  for _ in range(steps + 1):
    start = time.perf_counter()
    (loss, _), grads = compiled(params, state, images, labels)
    jax.block_until_ready(grads)
    times.append(time.perf_counter() - start)
  grad_norm = float(jnp.sqrt(sum(jnp.sum(g**2) for g in jax.tree_util.tree_leaves(grads))))
  return {
    "variant": variant,
    "mode": mode,
    "batch_size": batch_size,
    "chunk_size": cfg.attention_chunk_size,
    "num_params": hk.data_structures.tree_size(params),
    "xla_temp_bytes": int(analysis.temp_size_in_bytes),
    "xla_total_bytes": int(
      analysis.temp_size_in_bytes + analysis.argument_size_in_bytes + analysis.output_size_in_bytes
    ),
    "peak_rss_bytes": benchmarking.peak_rss_bytes(),
    "compile_s": compile_s,
    "step_s_median": statistics.median(times[1:]),
    "loss": float(loss),
    "grad_norm": grad_norm,
    "finite": bool(np.isfinite(float(loss)) and np.isfinite(grad_norm)),
  }


def _run_mode_in_subprocess(mode: str) -> dict:
  return _run_self(
    f"--mode={mode}",
    f"--variant={_VARIANT.value}",
    f"--batch_size={_BATCH.value}",
    f"--chunk_size={_CHUNK.value}",
    f"--steps={_STEPS.value or 2}",
  )


def _synthetic_jpeg(rng, height: int = 375, width: int = 500) -> bytes:
  """Smooth colour fields plus noise, JPEG quality 90: about the size of an ImageNet JPEG."""
  import numpy as np
  from PIL import Image

  coarse = rng.integers(0, 256, (height // 24 + 1, width // 24 + 1, 3), dtype=np.uint8)
  smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC))
  noisy = np.clip(smooth + rng.normal(0, 20, smooth.shape), 0, 255).astype(np.uint8)
  out = io.BytesIO()
  Image.fromarray(noisy).save(out, "JPEG", quality=90)
  return out.getvalue()


def measure_input_throughput(num_images: int, batch_size: int, steps: int, workers: int) -> dict:
  """Images/s of ImageNet training batches (see the module docstring)."""
  import tarfile
  import tempfile

  import numpy as np

  from configs import imagenet as imagenet_config
  from perceiver_jax.data import imagenet
  from perceiver_jax.data import imagenet_build
  from perceiver_jax.data import imagenet_classes

  def add(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))

  rng = np.random.default_rng(0)
  synsets = imagenet_classes.imagenet_synsets()[:4]
  with tempfile.TemporaryDirectory() as root:
    sizes = []
    with tarfile.open(os.path.join(root, imagenet_build.TRAIN_TAR), "w") as outer:
      for synset in synsets:
        inner = io.BytesIO()
        with tarfile.open(fileobj=inner, mode="w") as tar:
          for i in range(num_images // len(synsets)):
            sizes.append(len(data := _synthetic_jpeg(rng)))
            add(tar, f"{synset}_{i}.JPEG", data)
        add(outer, f"{synset}.tar", inner.getvalue())
    data_dir = os.path.join(root, "tfds")
    imagenet_build.build(root, data_dir)
    config = imagenet_config.get_config("variant=io_fourier")
    config.data.data_dir = data_dir
    config.data.eval_split = "train"  # only the training split is built and timed
    config.data.num_workers = workers
    config.data.num_threads = 1
    config.batch_size = batch_size
    data = imagenet.make_data(config, process_index=0, process_count=1)
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


def _gib(n: int | None) -> str:
  return "n/a" if n is None else f"{n / 2**30:.2f} GiB"


def _gflop(n: float | None) -> str:
  return "n/a" if n is None else f"{n / 1e9:.2f}"


def _pct(x: float | None) -> str:
  return "n/a" if x is None else f"{100 * x:.1f}%"


def machine() -> str:
  import jax

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
  def git(*args):
    return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True)

  head = git("rev-parse", "--short", "HEAD").stdout.strip() or "unknown"
  dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
  return head + (" (with uncommitted changes)" if dirty else "")


def _model_table(results: list[dict]) -> list[str]:
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


def _summary(workload: str, results: list[dict], out_dir: pathlib.Path | None) -> list[str]:
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


def _section(title: str, body: list[str], command: str, machine_name: str, revision: str) -> str:
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


def _peaks(dtypes: list[str]) -> dict[str, dict]:
  peaks = {dtype: benchmarking.matmul_peak(dtype) for dtype in dtypes}
  for dtype, peak in peaks.items():
    print(f"matmul peak ({dtype}): {peak['flops_per_s'] / 1e9:.1f} GFLOP/s at n = {peak['size']}")
  return peaks


def _input_section(result: dict) -> list[str]:
  return [
    "| workers | batch | timed batches | mean JPEG | images/s | per core | per CPU-second |",
    "|---|---|---|---|---|---|---|",
    f"| {result['num_workers']} | {result['batch_size']} | {result['timed_batches']} | "
    f"{result['jpeg_kib_mean']:.0f} KiB | {result['images_per_s_median']:.1f} | "
    f"{result['images_per_s_per_core']:.1f} | "
    f"{result['images_per_cpu_s'] or float('nan'):.1f} |",
  ]


def main(argv):
  del argv
  for dtype in _DTYPES.value:
    if dtype not in ("float32", "bfloat16"):
      sys.exit(f"error: --dtypes has {dtype!r}; expected float32 or bfloat16")
  if _CASE.value:
    print(json.dumps(_measure_case(_CASE.value, _DTYPES.value[0])))
    return
  if _MODE.value:
    if _MODE.value not in MODES:
      sys.exit(f"error: unknown --mode={_MODE.value!r}; expected one of {sorted(MODES)}")
    print(
      json.dumps(
        measure_train_step_memory(
          _VARIANT.value, _MODE.value, _BATCH.value, _CHUNK.value, _STEPS.value or 2
        )
      )
    )
    return

  import jax

  on_accelerator = jax.default_backend() != "cpu"
  if _WORKLOAD.value == "all":
    workloads = [w for w in ALL_WORKLOADS if w != "imagenet-memory"]
    if not on_accelerator:
      workloads.remove("paper-models")
  else:
    workloads = [_WORKLOAD.value]
  command = "python scripts/benchmark.py " + " ".join(sys.argv[1:])
  out_dir = pathlib.Path(_RESULTS.value).parent if _RESULTS.value else None
  machine_name, revision = machine(), commit()  # the code measured: before anything runs
  peaks = _peaks(_DTYPES.value) if set(workloads) & set(MODEL_WORKLOADS) else {}
  everything, sections = {"machine": machine_name, "commit": revision, "peaks": peaks}, {}
  for workload in workloads:
    if workload == "imagenet-input":
      result = measure_input_throughput(
        _NUM_IMAGES.value, _INPUT_BATCH.value, _INPUT_STEPS.value, _NUM_WORKERS.value
      )
      body = _input_section(result)
      results = [result]
    elif workload == "imagenet-memory":
      results = [_run_mode_in_subprocess(mode) for mode in MODES]
      body = _memory_table(results)
    else:
      results = []
      rounds = _ROUNDS.value or ROUNDS.get(workload, 1)
      for dtype in _DTYPES.value:
        cases = _cases(workload)
        runs = [[] for _ in cases]
        for round_index in range(rounds):
          for index, case in enumerate(cases):
            where = f", round {round_index + 1} of {rounds}" if rounds > 1 else ""
            print(f"[{workload}] {case.label} ({dtype}{where}) ...", flush=True)
            runs[index].append(_run_case_in_subprocess(workload, index, dtype))
        for case_runs in runs:
          result = benchmarking.median_run(case_runs)
          result.update(benchmarking.utilisation(result, peaks[dtype]["flops_per_s"]))
          results.append(result)
      peak_line = ", ".join(f"{d} {p['flops_per_s'] / 1e9:.0f} GFLOP/s" for d, p in peaks.items())
      body = [f"Matmul peak measured in this run: {peak_line}.", "", *_model_table(results)]
      body += _summary(workload, results, out_dir)
    print("\n".join(body), flush=True)
    everything[workload] = results
    sections[workload] = _section(workload, body, command, machine_name, revision)
  if _RESULTS.value:
    benchmarking.update_results(_RESULTS.value, sections)
  if _JSON.value:
    with atomic.atomic_write(_JSON.value, "w") as f:
      json.dump(everything, f, indent=2)


def _memory_table(results: list[dict]) -> list[str]:
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


if __name__ == "__main__":
  app.run(main)
