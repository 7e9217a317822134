"""Fine-tuning from a checkpoint with the default `config.pretrained` settings works for every
decoder and baseline architecture: the model's own head is re-initialised, the rest loaded."""

import os
import sys

import jax
import numpy as np
import optax
import pytest
import tiny_training

from perceiver_jax import checkpointing
from perceiver_jax import model
from perceiver_jax import pretrained
from perceiver_jax import registry
from perceiver_jax import train
from perceiver_jax import train_step
from perceiver_jax.models import baselines

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from configs import common  # noqa: E402

# The image model's heads; the 'embedding' decoder is the text model's, tied to its input,
# the 'flow' decoder the flow model's, whose queries are its frame-pair inputs, and the
# 'multimodal' decoder the autoencoder's, whose queries are its audio, video and label inputs.
SPECIFIC = ("embedding", "flow", "multimodal")
KINDS = [f"decoder={d}" for d in model.DECODERS if d not in SPECIFIC] + [
  f"architecture={a}" for a in baselines.ARCHITECTURES if a != "perceiver"
]


def _model_config(kind: str, num_classes: int):
  cfg = registry.get_model_config("testing")
  field, value = kind.split("=")
  if field == "decoder":
    cfg.decoder.type = value
  else:
    cfg.architecture = value
  cfg.num_classes = num_classes
  return cfg


def _init(cfg, seed: int):
  forward, tx = model.build_model(cfg), optax.adam(1e-3)
  init = jax.jit(lambda rng: train_step.init_train_state(forward, tx, rng, model.dummy_inputs(cfg)))
  return jax.tree.map(np.asarray, init(jax.random.PRNGKey(seed)))


@pytest.mark.parametrize("kind", KINDS)
def test_default_settings_replace_the_head_of_every_model(tmp_path, kind):
  saved = _init(_model_config(kind, num_classes=10), seed=0)
  template = _init(_model_config(kind, num_classes=5), seed=1)
  with checkpointing.Checkpointer(str(tmp_path), save_every_steps=1) as ckpt:
    ckpt.save(1, saved)
  defaults = common.training_defaults().pretrained
  params, state = pretrained.load_pretrained(
    str(tmp_path),
    template.params,
    template.state,
    exclude=tuple(defaults.exclude),
    exclude_head=defaults.exclude_head,
  )
  heads = [m for m in template.params if m in pretrained.HEAD_MODULES]
  assert len(heads) == 1, heads  # every model has exactly one known head
  for module, leaves in template.params.items():
    expected = leaves if module in heads else saved.params[module]
    for name in leaves:
      np.testing.assert_array_equal(params[module][name], expected[name])
  for module, leaves in template.state.items():
    for name in leaves:
      np.testing.assert_array_equal(state[module][name], saved.state[module][name])


def test_a_user_prefix_that_matches_nothing_is_still_refused(tmp_path):
  template = _init(_model_config("decoder=classification", num_classes=5), seed=0)
  with pytest.raises(ValueError, match=r"match no module of the model: \['encoder_typo'\]"):
    pretrained.load_pretrained(
      str(tmp_path), template.params, exclude=("encoder_typo",), exclude_head=True
    )


def test_train_and_evaluate_fine_tunes_with_the_default_config(data_dir, tmp_path, monkeypatch):
  source = tiny_training.tiny_config(data_dir, total_steps=1, checkpoint_every_steps=1)
  first = train.train_and_evaluate(source, str(tmp_path / "pretrained"))
  loaded = []
  real_load = pretrained.load_pretrained

  def recording_load(*args, **kwargs):
    loaded.append(real_load(*args, **kwargs))
    return loaded[-1]

  monkeypatch.setattr(pretrained, "load_pretrained", recording_load)
  config = tiny_training.tiny_config(data_dir, total_steps=1, checkpoint_every_steps=1, seed=1)
  config.pretrained.path = str(tmp_path / "pretrained" / "checkpoints")
  train.train_and_evaluate(config, str(tmp_path / "tuned"))
  ((params, _),) = loaded
  (head,) = [m for m in params if m in pretrained.HEAD_MODULES]
  for module, leaves in params.items():
    for name, leaf in leaves.items():
      same = np.array_equal(leaf, first.params[module][name])
      assert same != (module == head), (module, name)  # all but the head come from the file
