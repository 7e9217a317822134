"""The text modality and the byte language model (`language_perceiver_io`, `mlm_testing`)."""

import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perceiver_jax import model
from perceiver_jax import official_format
from perceiver_jax import registry
from perceiver_jax.data import bytes_tokenizer


def _init(cfg, seed=0):
  forward = model.build_model(cfg)
  params, state = forward.init(
    jax.random.PRNGKey(seed), model.dummy_inputs(cfg, 2), is_training=True
  )
  return forward, params, state


def _ids(text, length):
  ids = bytes_tokenizer.encode(text)
  return np.pad(ids, (0, length - len(ids)), constant_values=bytes_tokenizer.PAD)


def test_released_model_has_the_release_tree():
  params, state = model.param_shapes(registry.get_model_config("language_perceiver_io"))
  assert model.count_params(params) == 201_108_230 and state == {}
  shapes = {m: {k: v.shape for k, v in leaves.items()} for m, leaves in params.items()}
  assert shapes["embed"] == {"embeddings": (262, 768)}
  assert shapes["trainable_position_encoding"] == {"pos_embs": (2048, 768)}
  assert shapes["perceiver_encoder/~/trainable_position_encoding"] == {"pos_embs": (256, 1280)}
  assert shapes["basic_decoder/~/trainable_position_encoding"] == {"pos_embs": (2048, 768)}
  assert shapes["embedding_decoder"] == {"bias": (262,)}
  assert "basic_decoder/output" not in shapes
  cross = "perceiver_encoder/~/cross_attention/attention/linear"
  assert shapes[cross]["w"] == (1280, 256) and shapes[cross + "_2"]["w"] == (768, 1280)
  decoder = "basic_decoder/cross_attention/attention/linear"
  assert [shapes[decoder + s]["w"] for s in ("", "_1", "_2", "_3")] == [
    (768, 256),
    (1280, 256),
    (1280, 768),
    (768, 768),
  ]
  assert "perceiver_encoder/~/self_attention_25/attention/linear" in shapes
  assert "perceiver_encoder/~/self_attention_26/attention/linear" not in shapes


def test_logits_are_tied_to_the_input_embedding():
  cfg = registry.get_model_config("mlm_testing")
  forward, params, state = _init(cfg)
  ids = np.stack([_ids("hello world", 64), _ids("Grüße", 64)])
  logits, _ = forward.apply(params, state, None, ids, is_training=False)
  assert logits.shape == (2, 64, 262) and logits.dtype == jnp.float32
  # The bias is added to every position's logits.
  params2 = jax.tree.map(lambda x: x, params)
  params2["embedding_decoder"] = {"bias": params["embedding_decoder"]["bias"] + 1.0}
  shifted, _ = forward.apply(params2, state, None, ids, is_training=False)
  np.testing.assert_allclose(shifted, logits + 1.0, atol=1e-5)


def test_padding_is_masked_as_keys_and_queries():
  cfg = registry.get_model_config("mlm_testing")
  forward, params, state = _init(cfg)
  ids = np.stack([_ids("the cat sat", 64), _ids("a dog ran off", 64)])
  logits, _ = forward.apply(params, state, None, ids, is_training=False)
  # Keys: changing what padding embeds (the PAD row, the positions of padded bytes) leaves
  # the real bytes' logits unchanged (but for the PAD logit, which uses the PAD row).
  p2 = jax.tree.map(lambda x: x, params)
  p2["embed"] = {"embeddings": params["embed"]["embeddings"].at[bytes_tokenizer.PAD].add(3.0)}
  pos = params["trainable_position_encoding"]["pos_embs"]
  p2["trainable_position_encoding"] = {"pos_embs": pos.at[20:].add(5.0)}
  changed, _ = forward.apply(p2, state, None, ids, is_training=False)
  for b, n in enumerate((11, 13)):
    np.testing.assert_allclose(changed[b, :n, 1:], logits[b, :n, 1:], atol=1e-5)
  # Queries: padded positions attend to nothing of their own, so their outputs are one row.
  for b, n in enumerate((11, 13)):
    np.testing.assert_allclose(logits[b, n:], np.broadcast_to(logits[b, n], (64 - n, 262)), 1e-5)
    assert not np.allclose(logits[b, 0], logits[b, 1])


def test_embedding_decoder_needs_the_text_modality():
  cfg = registry.get_model_config("testing")
  cfg.decoder.type = "embedding"
  with pytest.raises(ValueError, match="config.model.decoder.type='embedding'"):
    model.validate_model_config(cfg)
  cfg = registry.get_model_config("mlm_testing")
  cfg.num_classes = 10
  with pytest.raises(ValueError, match="config.model.num_classes=10"):
    model.validate_model_config(cfg)


def test_bare_params_pickle_round_trips_bit_exactly(tmp_path):
  cfg = registry.get_model_config("mlm_testing")
  forward, params, state = _init(cfg, seed=3)
  path = str(tmp_path / "mlm.pickle")
  official_format.save_official_pickle(path, params, bare=True)
  with open(path, "rb") as f:
    raw = pickle.load(f)
  assert "params" not in raw and "embed" in raw  # the release's bare layout
  loaded, loaded_state = official_format.load_official_pickle(path)
  assert loaded_state == {}
  official_format.check_tree(model.param_shapes(cfg)[0], loaded)
  for module, leaves in params.items():
    for name, value in leaves.items():
      np.testing.assert_array_equal(loaded[module][name], np.asarray(value))
  ids = _ids("bit exact", 64)[None]
  a, _ = forward.apply(params, state, None, ids, is_training=False)
  b, _ = forward.apply(loaded, {}, None, ids, is_training=False)
  np.testing.assert_array_equal(a, b)
  with pytest.raises(ValueError, match="cannot hold state"):
    official_format.save_official_pickle(path, params, {"bn": {"x": np.zeros(1)}}, bare=True)
