"""The video autoencoder: modality 'audio_video_label', the multimodal decoder
(`models/multimodal.py`), `registry.multimodal_autoencoding` / `multimodal_testing` and
`configs/kinetics_autoencoding.py`.

The released sizes are checked through shapes only (`model.param_shapes`); every forward
pass uses the tiny `multimodal_testing` model (4 frames of 16 x 16, 640 audio samples in 40
patches of 16, 10 classes; 1,024 pixel and 40 audio output points).
"""

import pickle

import haiku as hk
import jax
import jax.numpy as jnp
import numerics
import numpy as np
import pytest

from configs import kinetics_autoencoding
from perceiver_jax import model
from perceiver_jax import official_format
from perceiver_jax import pretrained
from perceiver_jax import registry
from perceiver_jax.models import position_encoding

FRAMES, SIZE, SAMPLES, PATCH, CLASSES = 4, 16, 640, 16, 10
PIXELS, PATCHES = FRAMES * SIZE * SIZE, SAMPLES // PATCH  # output points: 1024, 40
# Decoded in 4 chunks per modality in the tests below.
IMAGE_CHUNK, AUDIO_CHUNK = PIXELS // 4, PATCHES // 4
# Two float32 decodings of the same points that differ only in how many other points share
# the call (another matmul shape) round differently by a few epsilons of the outputs' scale;
# a wrong point or position moves outputs by a sizable fraction of it.
RTOL = 1e-5


def _linear(fan_in, fan_out):
  return {"w": (fan_in, fan_out), "b": (fan_out,)}


def _norm(width):
  return {"scale": (width,), "offset": (width,)}


def _cross_attention(prefix, q, kv, mlp):
  """A cross-attend's modules as the release names them: queries of width q attend to inputs
  of width kv (q/k and v widths those of kv), then an MLP q -> mlp -> q."""
  return {
    f"{prefix}/layer_norm": _norm(q),
    f"{prefix}/layer_norm_1": _norm(kv),
    f"{prefix}/attention/linear": _linear(q, kv),
    f"{prefix}/attention/linear_1": _linear(kv, kv),
    f"{prefix}/attention/linear_2": _linear(kv, kv),
    f"{prefix}/attention/linear_3": _linear(kv, q),
    f"{prefix}/layer_norm_2": _norm(q),
    f"{prefix}/mlp/linear": _linear(q, mlp),
    f"{prefix}/mlp/linear_1": _linear(mlp, q),
  }


def _self_attention(prefix, width):
  """A self-attend: one layer norm before the attention, one before the MLP."""
  tree = {f"{prefix}/layer_norm": _norm(width), f"{prefix}/layer_norm_1": _norm(width)}
  for suffix in ("", "_1", "_2", "_3"):
    tree[f"{prefix}/attention/linear{suffix}"] = _linear(width, width)
  tree[f"{prefix}/mlp/linear"] = _linear(width, width)
  tree[f"{prefix}/mlp/linear_1"] = _linear(width, width)
  return tree


def _release_tree():
  """`video_autoencoding_checkpoint.pystate`, module by module: inputs 704 wide, latents
  784 x 512, 8 self-attends, decoder queries 1,026 wide decoded to 512 features."""
  tree = {
    "encoder/~/trainable_position_encoding": {"pos_embs": (784, 512)},
    "multimodal_preprocessor/audio_padding": {"pos_embs": (1, 303)},  # 401 + 303 = 704
    "multimodal_preprocessor/image_padding": {"pos_embs": (1, 461)},  # 243 + 461
    "multimodal_preprocessor/label_padding": {"pos_embs": (1, 4)},  # 700 + 4
    "multimodal_preprocessor/audio_mask_token": {"pos_embs": (1, 704)},
    "multimodal_preprocessor/image_mask_token": {"pos_embs": (1, 704)},
    "multimodal_preprocessor/label_mask_token": {"pos_embs": (1, 704)},
    "multimodal_decoder/~decoder_query/audio_padding": {"pos_embs": (1, 641)},  # 385 + 641
    "multimodal_decoder/~decoder_query/image_padding": {"pos_embs": (1, 831)},  # 195 + 831
    "multimodal_decoder/~decoder_query/label_padding": {"pos_embs": (1, 2)},  # 1024 + 2
    "multimodal_decoder/~/basic_decoder/output": _linear(1026, 512),
    "classification_decoder/~/basic_decoder/~/trainable_position_encoding": {"pos_embs": (1, 1024)},
    "audio_postprocessor/linear": _linear(512, 16),
    "projection_postprocessor/linear": _linear(512, 3),
    "classification_postprocessor/linear": _linear(512, 700),
  }
  tree |= _cross_attention("encoder/~/cross_attention", 512, 704, 512)
  for i in range(8):
    tree |= _self_attention("encoder/~/self_attention" + (f"_{i}" if i else ""), 512)
  tree |= _cross_attention("multimodal_decoder/~/basic_decoder/cross_attention", 1026, 512, 1026)
  return tree


def _shapes(params):
  return {m: {k: tuple(v.shape) for k, v in leaves.items()} for m, leaves in params.items()}


def test_released_model_has_the_release_tree_and_total():
  cfg = registry.get_model_config("multimodal_autoencoding")
  assert model.input_channels(cfg) == 704
  assert model.output_points(cfg) == {"audio": 1920, "image": 16 * 224 * 224, "label": 1}
  assert model.input_shapes(cfg) == {
    "audio": (30_720,),
    "image": (16, 224, 224, 3),
    "label": (700,),
  }
  params, state = model.param_shapes(cfg)
  assert state == {}
  expected = _release_tree()
  assert sorted(_shapes(params)) == sorted(expected)
  assert _shapes(params) == expected
  assert model.count_params(params) == 19_858_855


def test_config_builds_the_released_model_and_latents_change_only_the_latent_array():
  default = kinetics_autoencoding.get_config()
  assert default.model.to_dict() == registry.get_model_config("multimodal_autoencoding").to_dict()
  assert default.task.name == "multimodal_autoencoding" and default.data.name == "kinetics"
  released = _shapes(model.param_shapes(default.model)[0])
  assert released == _release_tree()
  for latents in (392, 196):
    cfg = kinetics_autoencoding.get_config(f"latents={latents}").model
    params, _ = model.param_shapes(cfg)
    shapes = _shapes(params)
    assert shapes["encoder/~/trainable_position_encoding"] == {"pos_embs": (latents, 512)}
    assert {m: s for m, s in shapes.items() if m != "encoder/~/trainable_position_encoding"} == {
      m: s for m, s in released.items() if m != "encoder/~/trainable_position_encoding"
    }
    assert model.count_params(params) == 19_858_855 - (784 - latents) * 512
  with pytest.raises(ValueError, match=r"^config argument latents=100: expected one of"):
    kinetics_autoencoding.get_config("latents=100")


def _cfg(**section):
  """The test-size model with fields of `config.model.audio_video_label` replaced."""
  cfg = registry.get_model_config("multimodal_testing")
  for field, value in section.items():
    cfg.audio_video_label[field].update(value)
  return cfg


def _inputs(batch, seed=0, classes=None):
  rng = np.random.default_rng(seed)
  classes = rng.integers(0, CLASSES, batch) if classes is None else np.asarray(classes)
  return {
    "audio": rng.uniform(-1, 1, (batch, SAMPLES)).astype(np.float32),
    "image": rng.uniform(0, 1, (batch, FRAMES, SIZE, SIZE, 3)).astype(np.float32),
    "label": np.eye(CLASSES, dtype=np.float32)[classes],
  }


def _applier(cfg):
  forward = model.build_model(cfg)
  apply = jax.jit(forward.apply, static_argnames="is_training")

  def run(params, inputs, points=None, *, rng=None, is_training=False):
    outputs, _ = apply(params, {}, rng, inputs, is_training=is_training, subsampled_points=points)
    return jax.tree.map(np.asarray, outputs)

  return forward, run


@pytest.fixture(scope="module")
def tiny():
  """(run, params, inputs, outputs of every point) of the test-size model, batch 2."""
  cfg = _cfg()
  forward, run = _applier(cfg)
  inputs = _inputs(2)
  init = jax.jit(forward.init, static_argnames="is_training")
  params, state = init(jax.random.PRNGKey(0), inputs, is_training=True)
  assert state == {}
  params = jax.tree.map(np.asarray, params)
  return run, params, inputs, run(params, inputs)


def _chunk(k):
  return {
    "image": jnp.arange(k * IMAGE_CHUNK, (k + 1) * IMAGE_CHUNK),
    "audio": jnp.arange(k * AUDIO_CHUNK, (k + 1) * AUDIO_CHUNK),
  }


def test_chunks_and_per_example_points_decode_what_all_points_decode(tiny):
  run, params, inputs, full = tiny
  assert {k: v.shape for k, v in full.items()} == {
    "audio": (2, PATCHES, PATCH),
    "image": (2, PIXELS, 3),
    "label": (2, CLASSES),
  }
  # Inputs differ per example, so outputs do.
  assert numerics.relative_error(full["image"][0], full["image"][1]) > 1e-3
  # Four consecutive chunks of each modality: the matching slices of the whole decoding.
  chunks = [run(params, inputs, _chunk(k)) for k in range(4)]
  for modality in ("image", "audio"):
    whole = np.concatenate([c[modality] for c in chunks], axis=1)
    numerics.assert_close_to_scale(whole, full[modality], RTOL, modality)
  for c in chunks:  # the label does not depend on which points are decoded
    numerics.assert_close_to_scale(c["label"], full["label"], RTOL, "label")

  # [B, O]: a different random subset per example, each the same as an [O] call.
  rng = np.random.default_rng(1)
  points = {
    "image": np.stack([np.sort(rng.choice(PIXELS, IMAGE_CHUNK, replace=False)) for _ in "ab"]),
    "audio": np.stack([rng.permutation(PATCHES)[:AUDIO_CHUNK] for _ in "ab"]),  # unsorted
  }
  per_example = run(params, inputs, {m: jnp.asarray(p) for m, p in points.items()})
  for b in range(2):
    alone = run(params, inputs, {m: jnp.asarray(p[b]) for m, p in points.items()})
    for modality in ("image", "audio"):
      numerics.assert_close_to_scale(
        per_example[modality][b], alone[modality][b], RTOL, f"{modality} {b}"
      )
      numerics.assert_close_to_scale(
        per_example[modality][b], full[modality][b, points[modality][b]], RTOL, modality
      )
  numerics.assert_close_to_scale(per_example["label"], full["label"], RTOL, "label")


def test_a_point_is_queried_at_minus_one_plus_two_i_over_n(tiny):
  _, params, inputs, _ = tiny
  cfg = _cfg()
  t, y, x = 3, 5, 11
  pixel = (t * SIZE + y) * SIZE + x
  patch = 29

  def query(inputs):
    decoder = model.DECODERS["multimodal"](cfg, None)
    points = {"image": jnp.asarray([pixel]), "audio": jnp.asarray([patch])}
    return decoder.decoder_query(inputs, subsampled_points=points)

  # The model's parameters, under the same module names.
  q = np.asarray(hk.transform(query).apply(params, None, jnp.asarray(inputs["image"])))
  assert q.shape == (2, 3, 34)  # audio, image, label; the label's 32 + 2 is the widest
  np.testing.assert_array_equal(q[0], q[1])  # positions only: the same for every example

  # Image: (t, y, x) of a 4 x 16 x 16 grid at -1 + 2 i / n, not linspace's -1 + 2 i / (n - 1).
  pos = np.array([-1 + 2 * t / FRAMES, -1 + 2 * y / SIZE, -1 + 2 * x / SIZE], np.float32)
  np.testing.assert_allclose(pos, [0.5, -0.375, 0.375])
  image_ff = np.asarray(position_encoding.fourier_features(jnp.asarray(pos), 4, (4, 4, 4)))
  assert image_ff.shape == (27,)  # 3 + 3 dims x 4 bands x (sin, cos)
  np.testing.assert_allclose(q[0, 1, :27], image_ff, atol=1e-6)
  pad = params["multimodal_decoder/~decoder_query/image_padding"]["pos_embs"][0]
  np.testing.assert_array_equal(q[0, 1, 27:], pad)
  linspace = np.array([-1 + 2 * t / (FRAMES - 1), -1 + 2 * y / (SIZE - 1), -1 + 2 * x / (SIZE - 1)])
  assert np.abs(q[0, 1, :3] - linspace).max() > 0.1

  # Audio: patch 29 of 40 at -1 + 58 / 40 = 0.45, 8 bands up to max_resolution 640. Bands
  # up to 320 amplify the float32 rounding of the position (6e-8) to 1e-4 in sin and cos.
  np.testing.assert_allclose(q[0, 0, 0], 0.45, atol=1e-6)
  audio_ff = np.asarray(position_encoding.fourier_features(jnp.asarray([0.45]), 8, (640,)))
  np.testing.assert_allclose(q[0, 0, :17], audio_ff, atol=1e-3)
  np.testing.assert_array_equal(
    q[0, 0, 17:], params["multimodal_decoder/~decoder_query/audio_padding"]["pos_embs"][0]
  )
  # Label: its learned query and padding.
  label_query = params["classification_decoder/~/basic_decoder/~/trainable_position_encoding"]
  np.testing.assert_array_equal(q[0, 2, :32], label_query["pos_embs"][0])
  np.testing.assert_array_equal(
    q[0, 2, 32:], params["multimodal_decoder/~decoder_query/label_padding"]["pos_embs"][0]
  )


def test_evaluation_masks_the_label_and_training_masks_half_of_them(tiny):
  run, params, inputs, full = tiny
  points = _chunk(1)
  masked = run(params, inputs, points)
  other = {**inputs, "label": np.roll(inputs["label"], 3, axis=-1)}
  assert not np.array_equal(other["label"], inputs["label"])
  # eval_mask_probs.label = 1: the label input is replaced, so nothing depends on it.
  for modality, value in run(params, other, points).items():
    np.testing.assert_array_equal(value, masked[modality], err_msg=modality)

  # eval_mask_probs.label = 0: the same parameters see the label, and every output moves.
  _, run_seen = _applier(_cfg(eval_mask_probs=dict(label=0.0)))
  seen = run_seen(params, inputs, points)
  seen_other = run_seen(params, other, points)
  for modality in ("image", "audio", "label"):
    assert numerics.relative_error(seen[modality], masked[modality]) > 1e-3, modality
    assert numerics.relative_error(seen_other[modality], seen[modality]) > 1e-3, modality

  # Training, mask_probs.label = 0.5: each example's label is masked or not at random. With
  # 32 copies of example 0, each row is either the masked or the unmasked evaluation output.
  batch = {k: np.repeat(v[:1], 32, axis=0) for k, v in inputs.items()}

  def masked_rows(seed):
    out = run(params, batch, points, rng=jax.random.PRNGKey(seed), is_training=True)["label"]
    to_masked = np.abs(out - masked["label"][0]).max(axis=-1)
    to_seen = np.abs(out - seen["label"][0]).max(axis=-1)
    scale = numerics.scale(masked["label"][0])
    assert np.all(np.minimum(to_masked, to_seen) <= RTOL * scale)
    return to_masked < to_seen

  first, second = masked_rows(1), masked_rows(2)
  for rows in (first, second):
    assert 4 <= rows.sum() <= 28, rows  # binomial(32, 0.5): outside [4, 28] at p < 1e-5
  assert np.any(first != second)


@pytest.mark.parametrize(
  ("section", "changes", "message"),
  [
    ("mask_probs", dict(label=1.5), "mask_probs.label=1.5: must be in [0, 1]"),
    ("mask_probs", dict(audio=-0.1), "mask_probs.audio=-0.1: must be in [0, 1]"),
    ("eval_mask_probs", dict(label=0.5), "eval_mask_probs.label=0.5: must be 0 or 1"),
    ("audio", dict(prep="mel"), "audio.prep='mel': the autoencoder reconstructs raw audio"),
    ("image", dict(patch_shape=(1, 3, 3)), "image.patch_shape=(1, 3, 3): y patch 3 must divide 16"),
    ("image", dict(patch_shape=(3, 4, 4)), "image.patch_shape=(3, 4, 4): t patch 3 must divide 4"),
  ],
)
def test_impossible_settings_are_one_line_errors_naming_the_field(section, changes, message):
  cfg = _cfg(**{section: changes})
  with pytest.raises(ValueError) as error:
    model.build_model(cfg)
  assert str(error.value).startswith(f"config.model.audio_video_label.{message}")
  assert "\n" not in str(error.value)


def test_the_multimodal_decoder_and_this_modality_go_together():
  cfg = _cfg()
  cfg.decoder.type = "classification"
  with pytest.raises(
    ValueError, match=r"^config\.model\.decoder\.type='classification': modality 'audio_video_"
  ) as error:
    model.build_model(cfg)
  assert "\n" not in str(error.value)
  image = registry.get_model_config("testing")
  image.decoder.type = "multimodal"
  with pytest.raises(ValueError, match=r"^config\.model\.decoder\.type='multimodal': the 'mult"):
    model.build_model(image)


def test_a_release_layout_checkpoint_loads_and_reproduces_its_outputs(tiny, tmp_path):
  run, params, inputs, full = tiny
  # As the release ships it: the params mapping alone, plain dicts of numpy arrays, pickled.
  path = tmp_path / "video_autoencoding_checkpoint.pystate"
  with open(path, "wb") as f:
    pickle.dump(
      {m: {k: np.asarray(v) for k, v in leaves.items()} for m, leaves in params.items()}, f
    )
  read, state = pretrained.read_weights(str(path))
  assert state == {} and _shapes(read) == _shapes(params)
  loaded, state = pretrained.load_pretrained(str(path), params, {})
  assert state == {}
  for modality, value in run(loaded, inputs).items():
    np.testing.assert_array_equal(value, full[modality], err_msg=modality)

  wrong = {m: dict(leaves) for m, leaves in params.items()}
  wrong["multimodal_preprocessor/label_mask_token"] = {"pos_embs": np.zeros((1, 80), np.float32)}
  official_format.save_official_pickle(str(path), wrong, bare=True)
  with pytest.raises(official_format.CheckpointMismatchError) as error:
    pretrained.load_pretrained(str(path), params, {})
  assert "1 wrong shape" in str(error.value)
  assert "multimodal_preprocessor/label_mask_token/pos_embs: expected (1, 79), got (1, 80)" in str(
    error.value
  )
