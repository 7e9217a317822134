"""The benchmark suite: training and inference speed, FLOP utilisation, memory, compile time
and input-pipeline speed, on fixed workloads that compare across commits.

  python scripts/benchmark.py                                   # the whole suite
  python scripts/benchmark.py --workload=io-small [--dtypes=float32,bfloat16]
  python scripts/benchmark.py --workload=all --results=benchmarks/results.md --json=OUT.json

Workloads (`perceiver_jax/tools/benchmark_workloads.py` defines their shapes):
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
  mlm-small                   the masked-language-modelling step of the miniature byte model
                              (`configs/mlm.py:mini` sizes: 256 bytes, 64 x 128 latents),
                              batch 8.
  flow-train                  the optical-flow training step (end-point error) of the miniature
                              flow model (`registry.flow_mini`: 32 x 48 frame pairs, 128 x 128
                              latents) on generated pairs, batch 16.
  flow-tiled                  tiled inference of Sintel-sized pairs (436 x 1024, 6 tiles of
                              368 x 496) through the released flow model and a small one,
                              pairs/s at tile batch sizes 1 and 2 on a CPU, 1 and 6 on an
                              accelerator (--tile_batch_sizes, --tiled_models; --steps: timed
                              pairs after one warm-up pair, by default 1 on a CPU, where a
                              released tile is 1.9 TFLOP, and 5 on an accelerator; not part of
                              `all` on a CPU).
  imagenet-memory             forward + backward of the full ImageNet Perceiver at batch 2 in
                              plain, chunked and chunked + remat modes (not part of `all`).
  all                         every workload above except imagenet-memory (on a CPU also
                              without paper-models and flow-tiled).

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

import pathlib
import sys

from absl import app
from absl import flags

# The working tree's package and `configs`, not an install.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from perceiver_jax import host_memory  # noqa: E402
from perceiver_jax.tools import benchmark_suite  # noqa: E402
from perceiver_jax.tools import benchmark_workloads  # noqa: E402

_WORKLOAD = flags.DEFINE_enum(
  "workload", "all", [*benchmark_suite.WORKLOADS, "all"], "What to measure."
)
_DTYPES = flags.DEFINE_list("dtypes", ["float32"], "Compute dtypes: float32, bfloat16.")
_JSON = flags.DEFINE_string("json", None, "Also write the results to this JSON file.")
_RESULTS = flags.DEFINE_string("results", None, "Update this Markdown results file.")
_STEPS = flags.DEFINE_integer("steps", 0, "Timed steps per case; 0: the workload's default.")
_ROUNDS = flags.DEFINE_integer(
  "rounds", 0, "Alternating measurements per case (median kept); 0: the workload's default."
)
_CHUNK = flags.DEFINE_integer("chunk_size", 4096, "Key chunk size of chunked cross-attention.")
# imagenet-memory
_BATCH = flags.DEFINE_integer("batch_size", 2, "imagenet-memory: batch size.")
_VARIANT = flags.DEFINE_string("variant", "perceiver_ff", "imagenet-memory: registry variant.")
# imagenet-input
_NUM_IMAGES = flags.DEFINE_integer("num_images", 256, "imagenet-input: synthetic JPEGs.")
_INPUT_BATCH = flags.DEFINE_integer("input_batch_size", 32, "imagenet-input: batch size.")
_INPUT_STEPS = flags.DEFINE_integer("input_steps", 16, "imagenet-input: timed batches.")
_NUM_WORKERS = flags.DEFINE_integer("num_workers", 0, "imagenet-input: grain worker processes.")
# flow-tiled
_TILED_MODELS = flags.DEFINE_list(
  "tiled_models", list(benchmark_workloads.TILED_MODELS), "flow-tiled: small, released."
)
_TILE_BATCH_SIZES = flags.DEFINE_list(
  "tile_batch_sizes", [], "flow-tiled: tiles per model call; empty: 1,2 on a CPU, else 1,6."
)


def main(argv):
  if len(argv) > 1:
    sys.exit(f"error: unexpected arguments {argv[1:]}")
  try:
    options = benchmark_suite.Options(
      workload=_WORKLOAD.value,
      dtypes=tuple(_DTYPES.value),
      json=_JSON.value,
      results=_RESULTS.value,
      steps=_STEPS.value,
      rounds=_ROUNDS.value,
      chunk_size=_CHUNK.value,
      batch_size=_BATCH.value,
      variant=_VARIANT.value,
      num_images=_NUM_IMAGES.value,
      input_batch_size=_INPUT_BATCH.value,
      input_steps=_INPUT_STEPS.value,
      num_workers=_NUM_WORKERS.value,
      tiled_models=tuple(_TILED_MODELS.value),
      tile_batch_sizes=tuple(int(size) for size in _TILE_BATCH_SIZES.value),
      command="python scripts/benchmark.py " + " ".join(sys.argv[1:]),
    )
  except ValueError as e:
    sys.exit(f"error: {e}")
  benchmark_suite.run(options)


if __name__ == "__main__":
  host_memory.use_retained_memory()  # first: it restarts the process once
  app.run(main)
