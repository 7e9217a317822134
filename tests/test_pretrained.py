"""Tests for perceiver_jax/pretrained.py: pretrained weights from official pickles and
`Checkpointer` directories, with a new head; a trained run's model."""

import jax
import numpy as np
import pytest
from test_checkpointing import assert_identical
from test_checkpointing import real_state
from test_checkpointing import tiny_state

from perceiver_jax import model
from perceiver_jax import official_format
from perceiver_jax import registry
from perceiver_jax.checkpointing import Checkpointer
from perceiver_jax.official_format import CheckpointMismatchError
from perceiver_jax.pretrained import load_pretrained
from perceiver_jax.pretrained import load_trained_model

HEAD = "classification_decoder/~/basic_decoder/output"


@pytest.fixture(scope="module")
def ten_and_five_classes():
  """(params of a 10-class file, 5-class template params); different initialisations."""
  return real_state(num_classes=10, seed=0).params, real_state(num_classes=5, seed=1).params


def _check_fine_tune_params(loaded, file_params, template):
  assert list(loaded) == list(template)
  for module, leaves in template.items():
    expected = leaves if module == HEAD else file_params[module]
    assert list(loaded[module]) == list(leaves)
    for name, leaf in leaves.items():
      assert loaded[module][name].dtype == leaf.dtype
      np.testing.assert_array_equal(loaded[module][name], expected[name])


def test_official_pickle_with_new_head(tmp_path, ten_and_five_classes):
  file_params, template = ten_and_five_classes
  path = str(tmp_path / "imagenet.pystate")
  official_format.save_official_pickle(path, file_params, {})
  params, state = load_pretrained(path, template, {}, exclude=(HEAD,))
  _check_fine_tune_params(params, file_params, template)
  assert state == {}


def test_mismatched_head_without_exclude_is_reported(tmp_path, ten_and_five_classes):
  file_params, template = ten_and_five_classes
  path = str(tmp_path / "imagenet.pystate")
  official_format.save_official_pickle(path, file_params)
  with pytest.raises(CheckpointMismatchError, match=f"{HEAD}/w: expected \\(32, 5\\)"):
    load_pretrained(path, template)


@pytest.mark.parametrize("which", ["directory", "step_directory"])
def test_orbax_checkpoint_with_new_head(tmp_path, ten_and_five_classes, which):
  file_params, template = ten_and_five_classes
  with Checkpointer(str(tmp_path), save_every_steps=1) as ckpt:
    ckpt.save(1, real_state(num_classes=10)._replace(params=template))  # Superseded below.
    ckpt.save(7, real_state(num_classes=10))
  path = str(tmp_path) if which == "directory" else str(tmp_path / "7")
  params, _ = load_pretrained(path, template, exclude=(HEAD,))
  _check_fine_tune_params(params, file_params, template)


def test_state_is_loaded_and_checked(tmp_path):
  saved = tiny_state(2)
  with Checkpointer(str(tmp_path), save_every_steps=1) as ckpt:
    ckpt.save(2, saved)
  template = tiny_state(0)
  params, state = load_pretrained(str(tmp_path), template.params, template.state)
  assert_identical((params, state), (saved.params, saved.state))
  with pytest.raises(CheckpointMismatchError, match="state do not match"):
    load_pretrained(str(tmp_path), template.params)  # The model has no state; the file has.


def test_misspelt_exclude_prefix_is_refused(tmp_path):
  # `.../output_1` is not under `.../output`: prefixes match whole path components.
  with pytest.raises(ValueError, match="output_1"):
    load_pretrained(str(tmp_path / "x.pkl"), {HEAD: {}}, exclude=(HEAD + "_1",))


def test_load_trained_model_gives_the_newest_step(tmp_path):
  cfg = registry.get_model_config("testing")
  cfg.num_classes = 10
  saved = real_state(num_classes=10, seed=3)
  with Checkpointer(str(tmp_path / "checkpoints"), save_every_steps=1) as ckpt:
    ckpt.save(1, real_state(num_classes=10, seed=4))
    ckpt.save(2, saved)
  forward, params, state = load_trained_model(str(tmp_path), cfg)
  assert_identical((params, state), jax.device_get((saved.params, saved.state)))
  rng = np.random.default_rng(0)
  inputs = rng.normal(size=model.dummy_inputs(cfg, batch_size=2).shape).astype(np.float32)
  logits, _ = forward.apply(params, state, None, inputs, is_training=False)
  expected, _ = forward.apply(saved.params, saved.state, None, inputs, is_training=False)
  np.testing.assert_array_equal(logits, expected)
  assert logits.shape == (2, 10)
