"""Benchmarks: the model's step time and peak memory, and the ImageNet input pipeline's speed.

  python scripts/benchmark.py --workload=imagenet-memory [--json=OUT.json]
  python scripts/benchmark.py --workload=imagenet-input [--num_workers=2] [--json=OUT.json]

Workloads:
  imagenet-memory  forward + backward of the Perceiver paper's ImageNet model
                   (`perceiver_ff`: 50,176 x 261 inputs, 512 x 1024 latents, 8
                   cross-attends, 48 self-attends) at batch 2, once per attention
                   mode: plain, chunked, chunked + remat. Each mode runs in a fresh
                   process so that its peak RSS is its own.

                   Reported per mode: XLA's compiled temporary buffer size and
                   total (arguments + outputs + temporaries), the process's peak
                   RSS, compile time and the median step time over `--steps`
                   steps after one warm-up step.
  imagenet-input   training batches of perceiver_jax/data/imagenet.py with the full
                   Perceiver IO transforms (decode, random-resized crop to 224,
                   flip, RandAugment 4/5, normalise, MixUp/CutMix) from a TFDS
                   array_record dataset of `--num_images` synthetic 500x375 JPEGs
                   (quality 90, ~ImageNet's typical size), built with
                   imagenet_build.py. Reported: the median images/s over windows
                   of one batch of `--input_batch_size` per worker (`--input_steps`
                   batches in all, after two windows of warm-up), and per core
                   (divided by max(1, --num_workers): with 0 workers one thread
                   prepares the batches).
"""

from __future__ import annotations

import io
import json
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import time

from absl import app
from absl import flags

from perceiver_jax import atomic

_WORKLOAD = flags.DEFINE_enum(
  "workload", "imagenet-memory", ["imagenet-memory", "imagenet-input"], "What to measure."
)
_JSON = flags.DEFINE_string("json", None, "Also write the results to this JSON file.")
_STEPS = flags.DEFINE_integer("steps", 2, "Timed steps after warm-up.")
_BATCH = flags.DEFINE_integer("batch_size", 2, "Batch size.")
_VARIANT = flags.DEFINE_string("variant", "perceiver_ff", "Registry variant to measure.")
_CHUNK = flags.DEFINE_integer("chunk_size", 4096, "Key chunk size of the chunked mode.")
_MODE = flags.DEFINE_string("mode", None, "Internal: run one mode in this process.")
_NUM_IMAGES = flags.DEFINE_integer("num_images", 256, "imagenet-input: synthetic JPEGs.")
_INPUT_BATCH = flags.DEFINE_integer("input_batch_size", 32, "imagenet-input: batch size.")
_INPUT_STEPS = flags.DEFINE_integer("input_steps", 16, "imagenet-input: timed batches.")
_NUM_WORKERS = flags.DEFINE_integer("num_workers", 0, "imagenet-input: grain worker processes.")
REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent

MODES = {
  "plain": {"attention_chunk_size": 0, "remat": False},
  "chunked": {"attention_chunk_size": None, "remat": False},
  "chunked+remat": {"attention_chunk_size": None, "remat": True},
}


def _peak_rss_bytes() -> int:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


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
    "peak_rss_bytes": _peak_rss_bytes(),
    "compile_s": compile_s,
    "step_s_median": statistics.median(times[1:]),
    "loss": float(loss),
    "grad_norm": grad_norm,
    "finite": bool(np.isfinite(float(loss)) and np.isfinite(grad_norm)),
  }


def _run_mode_in_subprocess(mode: str) -> dict:
  cmd = [
    sys.executable,
    os.path.abspath(__file__),
    f"--mode={mode}",
    f"--variant={_VARIANT.value}",
    f"--batch_size={_BATCH.value}",
    f"--chunk_size={_CHUNK.value}",
    f"--steps={_STEPS.value}",
  ]
  out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
  return json.loads(out.strip().splitlines()[-1])


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

  sys.path.insert(0, str(REPO_ROOT))  # for `configs`, when run as scripts/benchmark.py
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


def _gib(n: int) -> str:
  return f"{n / 2**30:.2f} GiB"


def main(argv):
  del argv
  if _MODE.value:
    if _MODE.value not in MODES:
      sys.exit(f"error: unknown --mode={_MODE.value!r}; expected one of {sorted(MODES)}")
    result = measure_train_step_memory(
      _VARIANT.value, _MODE.value, _BATCH.value, _CHUNK.value, _STEPS.value
    )
    print(json.dumps(result))
    return
  if _WORKLOAD.value == "imagenet-input":
    result = measure_input_throughput(
      _NUM_IMAGES.value, _INPUT_BATCH.value, _INPUT_STEPS.value, _NUM_WORKERS.value
    )
    print(
      f"{result['images_per_s_median']:.1f} images/s with {result['num_workers']} workers "
      f"= {result['images_per_s_per_core']:.1f} images/s per core "
      f"(batch {result['batch_size']}, median over {result['timed_batches']} batches, "
      f"mean JPEG {result['jpeg_kib_mean']:.0f} KiB)"
    )
    if result["images_per_cpu_s"]:
      print(f"{result['images_per_cpu_s']:.1f} images per CPU-second of the process")
    results = [result]
  else:
    results = [_run_mode_in_subprocess(mode) for mode in MODES]
    _print_memory_table(results)
  if _JSON.value:
    with atomic.atomic_write(_JSON.value, "w") as f:
      json.dump(results, f, indent=2)


def _print_memory_table(results: list[dict]) -> None:
  header = "| mode | XLA temp | XLA total | peak RSS | compile | step (median) | loss |"
  print(header)
  print("|" + "---|" * 7)
  for r in results:
    print(
      f"| {r['mode']} | {_gib(r['xla_temp_bytes'])} | {_gib(r['xla_total_bytes'])} | "
      f"{_gib(r['peak_rss_bytes'])} | {r['compile_s']:.1f} s | {r['step_s_median']:.1f} s | "
      f"{r['loss']:.4f} |"
    )


if __name__ == "__main__":
  app.run(main)
