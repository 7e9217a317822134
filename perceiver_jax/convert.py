"""`python -m perceiver_jax.convert --from=FORMAT --to=FORMAT IN OUT`: converts weights
between the formats of `weight_formats`.

  python -m perceiver_jax.convert --from=official --to=safetensors \
      imagenet_fourier_position_encoding.pystate io_fourier.safetensors --model=io_fourier
  python -m perceiver_jax.convert --from=hf --to=safetensors vision-perceiver-conv/ conv.safetensors
  python -m perceiver_jax.convert --to=official_bare language.safetensors language.pickle

Read: official, official_bare, safetensors, hf (a transformers folder), orbax (a training
run); written: official, official_bare, safetensors (float32, or bfloat16 with
`--dtype=bfloat16`). `--from` defaults to the detected format. A safetensors output carries
the model config: the input's (hf, safetensors), else the registry variant `--model`, if
given. Whenever a model config is known, the weights are checked against its parameter tree
before anything is written. Errors are one `error:` line and a non-zero exit; the output is
written atomically, so a failure leaves no partial file.
"""

from __future__ import annotations

import os
import sys

from absl import app
from absl import flags

from perceiver_jax import model
from perceiver_jax import official_format
from perceiver_jax import registry
from perceiver_jax import weight_formats

_FROM = flags.DEFINE_enum(
  "from", None, list(weight_formats.READ_FORMATS), "Input format (default: detected)."
)
_TO = flags.DEFINE_enum("to", None, list(weight_formats.WRITE_FORMATS), "Output format.")
_MODEL = flags.DEFINE_string(
  "model", None, "Registry variant of the weights (e.g. io_fourier), when the input has no config."
)
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "safetensors dtype.")


def convert(src: str, dst: str, to: str, *, fmt: str | None, model_name: str | None, dtype: str):
  """Reads `src`, checks it against its model config when one is known, writes `dst`;
  returns the weights written."""
  weights = weight_formats.read(src, fmt)
  if model_name:
    named = registry.get_model_config(model_name)
    if weights.model_config is not None and weights.model_config.to_json() != named.to_json():
      raise ValueError(
        f"--model={model_name}: {src} stores a model config of its own; drop --model"
      )
    weights.model_config = named
  if weights.model_config is not None:
    expected_params, expected_state = model.param_shapes(weights.model_config)
    official_format.check_tree(expected_params, weights.params, what="params")
    official_format.check_tree(expected_state, weights.state, what="state")
  if os.path.abspath(src) == os.path.abspath(dst):
    raise ValueError(f"{dst}: the output would overwrite the input")
  weight_formats.write(dst, weights, to, dtype=dtype)
  return weights


def main(argv) -> None:
  if len(argv) != 3:
    sys.exit("error: give IN and OUT, e.g. convert --to=safetensors in.pystate out.safetensors")
  if _TO.value is None:
    sys.exit(f"error: --to is required: one of {', '.join(weight_formats.WRITE_FORMATS)}")
  src, dst = argv[1:]
  try:
    weights = convert(
      src, dst, _TO.value, fmt=_FROM.value, model_name=_MODEL.value, dtype=_DTYPE.value
    )
  except Exception as e:  # One line for any bad input, never a traceback.
    message = str(e).splitlines()
    print(f"error: {message[0] if message else type(e).__name__}", file=sys.stderr)
    for line in message[1:]:
      print(f"  {line}", file=sys.stderr)
    sys.exit(1)
  count = sum(leaf.size for leaves in weights.params.values() for leaf in leaves.values())
  print(f"wrote {dst} ({_TO.value}): {len(weights.params)} modules, {count} parameters")


if __name__ == "__main__":
  app.run(main)
