"""Tests for perceiver_jax/data/kinetics.py (sources 'procedural' and 'records') and
data/av_procedural.py, for the `multimodal_testing` model of configs/kinetics_autoencoding.py
(4 frames of 16 x 16, 640 audio samples, 10 classes; 1,024 pixel and 40 audio patch outputs).

The prepared clips encode time, as in tests/test_audioset_data.py: frame k has brightness
20 k and the audio is the ramp 1.8 t (t in seconds), so a window's first frame and its audio
tell where in the clip it starts.
"""

import json

import main_runner
import numpy as np
import pytest

from configs import kinetics_autoencoding
from perceiver_jax import model
from perceiver_jax import tasks
from perceiver_jax.data import av_procedural
from perceiver_jax.data import datasets
from perceiver_jax.data.prepare import clips as prepare_clips
from perceiver_jax.data.prepare import kinetics as prepare_kinetics
from perceiver_jax.tools import av_io

FRAMES, SIZE, SAMPLES, CLASSES = 4, 16, 640, 10
FPS, RATE = 25, 4000  # 640 samples per 4 frames at 25 fps: 160 per frame
SECONDS = 0.4  # 10 frames
SLOPE = 1.8  # audio ramp per second
CLASS_NAMES = ("archery", "bowling", "playing guitar")
HEADER = "label,youtube_id,time_start,time_end,split\n"


def _config(arg="runlocal", **data):
  config = kinetics_autoencoding.get_config(arg)
  config.data.num_threads = 2
  config.data.update(data)
  return config


def _facts(config):
  task = tasks.get(config.task)
  return datasets.ModelFacts(
    model.input_shapes(config.model),
    config.model.num_classes,
    task.eval_windows,
    model.output_points(config.model),
  )


def _load(config):
  return datasets.load(config, _facts(config))


def _batches(iterator, count):
  return [next(iterator) for _ in range(count)]


def _assert_equal(a, b):
  assert a.keys() == b.keys()
  for key in a:
    if isinstance(a[key], dict):
      _assert_equal(a[key], b[key])
    else:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def _check_training_batch(batch, prefix):
  inputs, labels = batch["inputs"], batch["labels"]
  assert {k: v.shape for k, v in inputs.items()} == {
    "audio": (*prefix, SAMPLES),
    "image": (*prefix, FRAMES, SIZE, SIZE, 3),
    "label": (*prefix, CLASSES),
  }
  assert {k: v.shape for k, v in labels.items()} == {
    "class": prefix,
    "image_points": (*prefix, 512),
    "audio_points": (*prefix, 32),
  }
  assert all(v.dtype == np.float32 for v in inputs.values())
  assert all(v.dtype == np.int32 for v in labels.values())
  assert 0.0 <= inputs["image"].min() and inputs["image"].max() <= 1.0
  assert -1.0 <= inputs["audio"].min() and inputs["audio"].max() <= 1.0
  np.testing.assert_array_equal(inputs["label"], np.eye(CLASSES)[labels["class"]])
  for key, limit in (("image_points", 1024), ("audio_points", 40)):
    points = labels[key].reshape(-1, labels[key].shape[-1])
    assert np.all(np.diff(points, axis=-1) > 0), key  # sorted and distinct
    assert points.min() >= 0 and points.max() < limit, key


def test_generated_clips_through_datasets_load():
  config = _config()
  assert config.data.source == "procedural" and config.batch_size == 8
  data = _load(config)
  assert (data.num_train_examples, data.num_eval_examples) == (64, 8)
  first = _batches(data.train_batches(0, (2, 4)), 8)  # one epoch: 8 steps of 8
  for batch in first:
    _check_training_batch(batch, (2, 4))
  # Points and clips differ from example to example.
  labels = first[0]["labels"]
  assert len({p.tobytes() for p in labels["image_points"].reshape(8, -1)}) == 8
  clips = np.concatenate([b["inputs"]["image"].reshape(8, -1) for b in first])
  assert len({c.tobytes() for c in clips}) == 64  # the epoch visits every clip once

  # A batch is a function of (seed, step): a run resumed at step 3 sees step 3's batch.
  resumed = next(data.train_batches(3, (2, 4)))
  _assert_equal(resumed, next(_load(config).train_batches(3, (2, 4))))
  _assert_equal(resumed, first[3])
  assert not np.array_equal(first[2]["inputs"]["image"], first[3]["inputs"]["image"])

  # Evaluation clips are others than the training clips.
  (evaluation,) = list(data.eval_batches((8,)))
  assert set(evaluation["labels"]) == {"class"}
  np.testing.assert_array_equal(evaluation["mask"], np.ones(8))
  eval_clips = {c.tobytes() for c in evaluation["inputs"]["image"].reshape(8, -1)}
  assert len(eval_clips) == 8 and not eval_clips & {c.tobytes() for c in clips}
  np.testing.assert_array_equal(
    evaluation["inputs"]["label"], np.eye(CLASSES)[evaluation["labels"]["class"]]
  )


def test_padded_evaluation_rows_have_mask_zero():
  config = _config()
  config.data.procedural.num_eval = 5
  (batch,) = list(_load(config).eval_batches((2, 4)))
  np.testing.assert_array_equal(batch["mask"], [[1, 1, 1, 1], [1, 0, 0, 0]])
  padding = batch["mask"] == 0
  assert not batch["inputs"]["image"][padding].any() and not batch["inputs"]["audio"][padding].any()
  assert batch["inputs"]["image"][~padding].std() > 0.05


def _clip(seed, label=None, size=32, samples_per_frame=512):
  return av_procedural.make_clip(
    np.random.default_rng(seed),
    num_frames=16,
    image_size=size,
    samples_per_frame=samples_per_frame,
    sample_rate=samples_per_frame * FPS,
    num_classes=CLASSES,
    label=label,
  )


def _shape_pixels(clip, label):
  """bool [T, H, W]: the pixels fully covered by the shape, which hold exactly its colour."""
  colour = av_procedural._class_colour(label, CLASSES).astype(np.float32)
  return np.all(np.abs(clip["image"] - colour) < 1e-6, axis=-1)


def test_a_generated_clip_is_reproducible_and_its_label_fixes_shape_and_colour():
  clip = _clip(7)
  again = _clip(7)
  assert clip["label"] == again["label"] and 0 <= clip["label"] < CLASSES
  np.testing.assert_array_equal(clip["image"], again["image"])
  np.testing.assert_array_equal(clip["audio"], again["audio"])
  assert clip["image"].shape == (16, 32, 32, 3) and clip["audio"].shape == (16 * 512,)
  assert clip["image"].dtype == clip["audio"].dtype == np.float32
  assert not np.array_equal(_clip(8)["image"], clip["image"])

  # The fully covered pixels fill this fraction of their bounding box: square 1, disc pi / 4,
  # diamond 1 / 2. Labels 0 and 5 are both squares, in other colours.
  fill = {0: (1.0, 1.0), 1: (0.7, 0.86), 2: (0.45, 0.6), 5: (1.0, 1.0)}
  for label, (low, high) in fill.items():
    for seed in (0, 1):
      clip = _clip(seed, label)
      assert clip["label"] == label
      covered = _shape_pixels(clip, label)
      for t in range(16):
        ys, xs = np.nonzero(covered[t])
        assert len(ys) >= 20, (label, seed, t)  # a shape of radius >= 0.12 x 32 pixels
        ratio = len(ys) / ((np.ptp(ys) + 1) * (np.ptp(xs) + 1))
        assert low - 1e-9 <= ratio <= high, (label, seed, t, ratio)
      other = 1 if label != 1 else 2
      assert not _shape_pixels(clip, other).any()


def test_the_tone_is_the_class_and_grows_louder_to_the_right():
  """The tone's pitch is the class's (more zero crossings for a higher class, the same for
  every clip of a class), and its loudness follows the shape's horizontal position: the
  frames' RMS correlates with the shape's column, for a clip whose shape moves across a
  third of the frame or more."""
  label = CLASSES - 1
  for seed in range(50):
    clip = _clip(seed, label, samples_per_frame=2048)
    covered = _shape_pixels(clip, label)
    columns = np.array([np.nonzero(covered[t])[1].mean() for t in range(16)])
    if np.ptp(columns) >= 32 / 3:
      break
  else:
    pytest.fail("no generated clip with enough horizontal motion")
  frames = clip["audio"].reshape(16, 2048)
  rms = np.sqrt(np.mean(np.square(frames), axis=1))
  assert np.corrcoef(columns, rms)[0, 1] > 0.9, (columns, rms)
  assert rms[np.argmax(columns)] > 1.5 * rms[np.argmin(columns)]

  def crossings(clip):
    return int(np.sum(np.diff(np.signbit(clip["audio"]))))

  by_class = [crossings(_clip(seed, label)) for seed, label in ((1, 0), (2, 0), (3, 5), (4, 9))]
  # Clicks at bounces add a few crossings at most; the tones differ several-fold.
  assert abs(by_class[0] - by_class[1]) <= 0.1 * by_class[0]
  assert by_class[0] < by_class[2] < by_class[3]


# ---- records: tiny clips prepared by perceiver_jax/data/prepare/kinetics.py --------------


def _ramp(rate):
  return (SLOPE * np.arange(round(SECONDS * rate)) / rate).astype(np.float32)


def _write_clip(path, audio_rate):
  """A 16 x 24 clip of 10 frames at 25 fps, frame k of brightness 20 k, with the ramp as PCM."""
  frames = np.stack([np.full((16, 24, 3), 20 * k, np.uint8) for k in range(round(SECONDS * FPS))])
  av_io.write_clip(str(path), frames, _ramp(audio_rate), fps=FPS, sample_rate=audio_rate)


@pytest.fixture(scope="module")
def records(tmp_path_factory):
  root = tmp_path_factory.mktemp("kinetics")
  clips, out = root / "clips", root / "records"
  clips.mkdir()
  (root / "classes.txt").write_text("\n".join(CLASS_NAMES) + "\n")
  _write_clip(clips / "aaaaaaaaaaa_000010_000020.mkv", 8000)
  _write_clip(clips / "bbbbbbbbbbb.mkv", 16_000)
  _write_clip(clips / "ccccccccccc_000003_000013.mkv", 4000)
  (root / "train.csv").write_text(
    HEADER + "bowling,aaaaaaaaaaa,10,20,train\n" + '"playing guitar",bbbbbbbbbbb,0,10,train\n'
  )
  (root / "validate.csv").write_text(HEADER + "archery,ccccccccccc,3,13,validate\n")
  summaries = prepare_kinetics.prepare(
    [str(root / "train.csv"), str(root / "validate.csv")],
    str(clips),
    str(out),
    prepare_clips.Options(sample_rate=RATE, frame_size=SIZE),
    classes=str(root / "classes.txt"),
  )
  assert [(s["split"], s["written"]) for s in summaries] == [("train", 2), ("validate", 1)]
  return out


def _records_config(out, **overrides):
  config = _config(source="records", data_dir=str(out), sample_rate=RATE)
  config.update({"batch_size": 2, "eval_batch_size": 2, **overrides})
  return config


def _start_frames(inputs):
  """Each window's start frame, from its first frame's brightness and from its audio."""
  from_video = inputs["image"][..., 0, :, :, :].mean(axis=(-3, -2, -1)) * 255 / 20
  mid = SAMPLES // 2  # away from resampling edge effects
  from_audio = (inputs["audio"][..., mid] / SLOPE * RATE - mid) / (RATE // FPS)
  return from_video, from_audio


def test_prepared_records_give_aligned_windows_with_their_labels(records):
  data = _load(_records_config(records))
  assert (data.num_train_examples, data.num_eval_examples) == (2, 1)
  starts = []
  for batch in _batches(data.train_batches(0, (2,)), 6):
    _check_training_batch(batch, (2,))
    # The CSV's labels are indices into classes.txt; each step holds both training clips.
    assert sorted(batch["labels"]["class"].tolist()) == [1, 2]
    from_video, from_audio = _start_frames(batch["inputs"])
    np.testing.assert_allclose(from_video, from_audio, atol=0.3)  # audio and video aligned
    assert np.all((from_video > -0.3) & (from_video < 6.3))  # starts 0 to 10 - 4 frames
    starts.extend(np.round(from_video).tolist())
  assert len(set(starts)) > 2  # training windows start at random frames

  (evaluation,) = list(data.eval_batches((2,)))
  np.testing.assert_array_equal(evaluation["mask"], [1.0, 0.0])
  np.testing.assert_array_equal(evaluation["labels"]["class"], [0, 0])  # archery; padding
  np.testing.assert_array_equal(evaluation["inputs"]["label"][0], np.eye(CLASSES)[0])
  assert evaluation["inputs"]["audio"].shape == (2, SAMPLES)
  assert evaluation["inputs"]["image"].shape == (2, FRAMES, SIZE, SIZE, 3)
  # The middle window: frames 3 to 6 of 10, and their audio.
  from_video, from_audio = _start_frames(evaluation["inputs"])
  np.testing.assert_allclose([from_video[0], from_audio[0]], [3.0, 3.0], atol=0.3)
  brightness = evaluation["inputs"]["image"][0].mean(axis=(1, 2, 3)) * 255
  np.testing.assert_allclose(brightness, [60, 80, 100, 120], atol=4)
  assert not evaluation["inputs"]["image"][1].any()


def test_settings_that_do_not_fit_the_model_name_the_field(records):
  config = _records_config(records)
  config.data.train_points.image = 2000
  with pytest.raises(
    ValueError, match=r"^config\.data\.train_points\.image=2000: must be in \[1, 1024\]"
  ):
    _load(config)
  config = _records_config(records)
  config.data.train_points.audio = 41
  with pytest.raises(
    ValueError, match=r"^config\.data\.train_points\.audio=41: must be in \[1, 40\]"
  ):
    _load(config)
  config = _records_config(records)
  config.data.sample_rate = 48_000
  with pytest.raises(ValueError, match=r"^config\.data\.sample_rate=48000: .* need 4000 Hz$"):
    _load(config)


def test_two_steps_through_main(records, tmp_path):
  """The real command on the prepared clips: 2 training steps, then evaluation of the one
  validation clip, reconstructed whole in 4 chunks."""
  workdir = tmp_path / "run"
  result = main_runner.run_main(
    "kinetics_autoencoding.py:runlocal",
    workdir,
    "--config.data.source=records",
    f"--config.data.data_dir={records}",
    f"--config.data.sample_rate={RATE}",
    "--config.data.num_threads=2",
    "--config.batch_size=2",
    "--config.eval_batch_size=2",
    "--config.total_steps=2",
    "--config.eval_every_steps=2",
    "--config.log_every_steps=1",
    num_devices=2,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  final = json.loads((workdir / "final.json").read_text())
  assert final["step"] == 2 and final["eval/count"] == 1
  for key in ("eval/image_psnr", "eval/audio_psnr", "eval/top1", "eval/loss"):
    assert np.isfinite(final[key]), key
  assert final["eval/image_psnr"] > 0 and final["eval/top1"] in (0.0, 1.0)
  lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [m["step"] for m in lines if "train/loss" in m] == [1, 2]
