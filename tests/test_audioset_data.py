"""Tests for perceiver_jax/data/prepare/audioset.py (+ prepare/clips.py) and data/audioset.py.

The clips encode time: frame k of a 25 fps clip has brightness 20 k (500 per second, also
for the 50 fps clip), and the audio is the ramp 1.8 t (t in seconds), so a window's first
frame and its audio tell where in the clip it starts.
"""

import json
import os

import main_runner
import numpy as np
import pytest
import soundfile

from configs import audioset as audioset_config
from perceiver_jax.data import audioset
from perceiver_jax.data import datasets
from perceiver_jax.data import image_ops
from perceiver_jax.data.prepare import audioset as prepare_audioset
from perceiver_jax.data.prepare import clips as prepare_clips
from perceiver_jax.tools import av_io

SECONDS = 0.48  # 12 frames at 25 fps
SLOPE = 1.8  # audio ramp per second
HEADER = (
  "# Segments csv created Sun Mar  5 10:54:31 2017\n"
  "# num_ytids=5, num_segs=5, num_unique_labels=4, num_positive_labels=6\n"
  "# YTID, start_seconds, end_seconds, positive_labels\n"
)


def _ramp(rate: int) -> np.ndarray:
  return (SLOPE * np.arange(int(SECONDS * rate)) / rate).astype(np.float32)


def _write_video(path, fps=25, audio_rate=0):
  """A 24x32 clip of SECONDS at `fps`; with `audio_rate`, the ramp in the same file (PCM in
  .mkv)."""
  frames = [
    np.full((24, 32, 3), round(500 * k / fps), np.uint8) for k in range(round(SECONDS * fps))
  ]
  audio = _ramp(audio_rate) if audio_rate else None
  av_io.write_clip(str(path), np.stack(frames), audio, fps=fps, sample_rate=audio_rate or 48_000)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  root = tmp_path_factory.mktemp("audioset")
  clips, out = root / "clips", root / "records"
  (clips / "video").mkdir(parents=True)
  (clips / "audio").mkdir()
  with open(root / "class_labels_indices.csv", "w") as f:
    f.write("index,mid,display_name\n")
    f.writelines(f'{i},/m/c{i},"Class {i}, one"\n' for i in range(audioset.NUM_CLASSES))
  # audiosetdl layout: video and audio apart, <YTID>_<start_ms>_<end_ms>.
  _write_video(clips / "video" / "aaaaaaaaaaa_30000_30480.mp4")
  soundfile.write(clips / "audio" / "aaaaaaaaaaa_30000_30480.flac", _ramp(16_000), 16_000)
  # One file with its own audio stream, PANNs-style name.
  _write_video(clips / "Ybbbbbbbbbbb.mkv", audio_rate=32_000)
  # 50 fps video and stereo 48 kHz wav, <YTID>_<start_ms>.
  _write_video(clips / "ccccccccccc_10000.mp4", fps=50)
  soundfile.write(clips / "ccccccccccc_10000.wav", np.stack([_ramp(48_000)] * 2, 1), 48_000)
  (clips / "eeeeeeeeeee.mp4").write_bytes(b"not a video" * 100)  # corrupt
  _write_video(clips / "fffffffffff.mkv", audio_rate=48_000)
  (root / "balanced_train_segments.csv").write_text(
    HEADER
    + 'aaaaaaaaaaa, 30.000, 30.480, "/m/c0,/m/c5"\n'
    + 'bbbbbbbbbbb, 0.000, 0.480, "/m/c1"\n'
    + 'ccccccccccc, 10.000, 10.480, "/m/c2"\n'
    + 'ddddddddddd, 0.000, 10.000, "/m/c3"\n'  # missing
    + 'eeeeeeeeeee, 0.000, 10.000, "/m/c3"\n'  # corrupt
  )
  (root / "eval_segments.csv").write_text(
    HEADER + 'fffffffffff, 20.000, 30.000, "/m/c7,/m/c526"\nbbbbbbbbbbb, 0.000, 0.480, "/m/c1"\n'
  )
  indices = prepare_audioset.read_class_indices(str(root / "class_labels_indices.csv"))
  index = prepare_clips.index_clips(str(clips))
  options = prepare_clips.Options(frame_size=20)
  summaries = {
    name: prepare_audioset.prepare_split(
      str(root / f"{name}_segments.csv"), indices, index, str(out), options, examples_per_shard=2
    )
    for name in ("balanced_train", "eval")
  }
  return root, out, summaries


def _config(out, **overrides):
  config = audioset_config.get_config("variant=audio_video,runlocal")
  config.data.update(data_dir=str(out), train_splits=("balanced_train",), num_threads=2)
  config.update({"batch_size": 2, "eval_batch_size": 2, **overrides})
  return config


# The model's facts: windows of 4 frames of 16 x 16 and 4 x 1920 samples, 16 eval windows.
SHAPES = {"audio": (4 * 1920,), "video": (4, 16, 16, 3)}


def _make(config, modalities=("audio", "video"), process_index=0, process_count=1, **facts):
  facts = datasets.ModelFacts(
    {m: SHAPES[m] for m in modalities}, audioset.NUM_CLASSES, **{"eval_windows": 16, **facts}
  )
  return audioset.make_data(config, facts, process_index=process_index, process_count=process_count)


def _start_frames(batch):
  """Each window's start frame, read from its first video frame and from its audio."""
  video = batch["inputs"]["video"]
  brightness = video * np.asarray(image_ops.IMAGENET_STDDEV_RGB) + image_ops.IMAGENET_MEAN_RGB
  from_video = np.round(brightness[..., 0, :, :, :].mean(axis=(-3, -2, -1)) / 20)
  mid = batch["inputs"]["audio"].shape[-1] // 2  # away from resampling edge effects
  from_audio = (batch["inputs"]["audio"][..., mid] / SLOPE - 2 / 25) * 25
  return from_video, from_audio


def test_preparation_counts_skipped_clips(prepared):
  _, out, summaries = prepared
  train = summaries["balanced_train"]
  assert (train["written"], train["missing"], train["unreadable"]) == (3, 1, 1)
  assert train["shards"] == 2 and sorted(os.listdir(out))[:2] == [
    "balanced_train-00000.array_record",
    "balanced_train-00001.array_record",
  ]
  assert train["skipped"][0] == "missing ddddddddddd"
  assert train["skipped"][1].startswith("unreadable eeeeeeeeeee: ")
  with open(os.path.join(out, "balanced_train.json")) as f:
    assert json.load(f)["unreadable"] == 1


def test_records_hold_resampled_audio_and_25fps_frames(prepared):
  _, out, _ = prepared
  source = audioset.decode_example
  import grain

  records = grain.sources.ArrayRecordDataSource(audioset.shard_paths(str(out), "balanced_train"))
  examples = {e["ytid"]: e for e in (source(records[i]) for i in range(len(records)))}
  assert sorted(examples) == ["aaaaaaaaaaa", "bbbbbbbbbbb", "ccccccccccc"]
  for ytid, example in examples.items():
    assert len(example["frames"]) == 12, ytid
    assert len(example["audio"]) == int(SECONDS * 48_000), ytid
    ramp = example["audio"][1000:-1000] / 32768.0
    np.testing.assert_allclose(ramp, _ramp(48_000)[1000:-1000], atol=2e-3, err_msg=ytid)
    frames = [image_ops.decode_image(f, ytid) for f in example["frames"]]
    assert frames[0].shape == (20, 27, 3)
    np.testing.assert_allclose([f.mean() for f in frames], 20 * np.arange(12), atol=4)
  assert examples["aaaaaaaaaaa"]["labels"].tolist() == [0, 5]


def test_bad_csv_line_names_file_and_line(tmp_path, prepared):
  root, _, _ = prepared
  indices = prepare_audioset.read_class_indices(str(root / "class_labels_indices.csv"))
  bad = tmp_path / "bad_segments.csv"
  bad.write_text(HEADER + 'aaaaaaaaaaa, 0.000, 10.000, "/m/c0"\nbbbbbbbbbbb, 0.000, "/m/c1"\n')
  with pytest.raises(ValueError, match=f"^{bad}:5: expected 4 fields"):
    prepare_audioset.read_segments(str(bad), indices)
  bad.write_text(HEADER + 'aaaaaaaaaaa, 0.000, ten, "/m/c0"\n')
  with pytest.raises(ValueError, match=f"^{bad}:4: start/end"):
    prepare_audioset.read_segments(str(bad), indices)
  bad.write_text(HEADER + 'aaaaaaaaaaa, 0.000, 10.000, "/m/c0,/m/nope"\n')
  with pytest.raises(ValueError, match=r"4: unknown label mid\(s\) \['/m/nope'\]"):
    prepare_audioset.read_segments(str(bad), indices)


def test_training_windows_shapes_alignment_and_labels(prepared):
  _, out, _ = prepared
  data = _make(_config(out))
  assert data.num_train_examples == 3
  assert data.example["inputs"]["video"].shape == (1, 4, 16, 16, 3)
  batches = data.train_batches(0, (1, 2))
  starts = []
  for _ in range(6):
    batch = next(batches)
    assert batch["inputs"]["audio"].shape == (1, 2, 7680)
    assert batch["inputs"]["video"].shape == (1, 2, 4, 16, 16, 3)
    assert batch["labels"].shape == (1, 2, 527) and batch["labels"].dtype == np.float32
    from_video, from_audio = _start_frames(batch)
    np.testing.assert_allclose(from_audio, from_video, atol=0.3)
    starts.extend(from_video.reshape(-1))
    for labels in batch["labels"].reshape(-1, 527):
      assert labels.sum() in (1, 2) and set(np.flatnonzero(labels)) <= {0, 1, 2, 5}
  assert len(set(starts)) > 3 and min(starts) >= 0 and max(starts) <= 8


def test_training_batches_are_a_function_of_the_step(prepared):
  _, out, _ = prepared
  config = _config(out)
  data = _make(config)
  run = data.train_batches(0, (2,))
  full = [next(run) for _ in range(4)]
  resumed = data.train_batches(2, (2,))
  for expected in full[2:]:
    _assert_batches_equal(next(resumed), expected)
  halves = [
    next(_make(config, process_index=p, process_count=2).train_batches(3, (1,))) for p in (0, 1)
  ]
  for p, half in enumerate(halves):
    _assert_batches_equal(half, _slice(full[3], p))


def test_eval_windows_cover_the_clip(prepared):
  _, out, _ = prepared
  data = _make(_config(out))
  (batch,) = list(data.eval_batches((1, 2)))
  assert batch["inputs"]["video"].shape == (1, 2, 16, 4, 16, 16, 3)
  assert batch["inputs"]["audio"].shape == (1, 2, 16, 7680)
  np.testing.assert_array_equal(batch["mask"], [[1.0, 1.0]])
  from_video, from_audio = _start_frames(batch)
  expected = np.round(np.linspace(0, 12 - 4, 16))
  np.testing.assert_array_equal(from_video[0, 0], expected)  # frames 0..11 all covered
  np.testing.assert_allclose(from_audio[0, 0], expected, atol=0.3)
  assert np.flatnonzero(batch["labels"][0, 0]).tolist() == [7, 526]
  assert np.flatnonzero(batch["labels"][0, 1]).tolist() == [1]


def test_eval_padding_and_audio_only(prepared):
  _, out, _ = prepared
  config = _config(out, eval_batch_size=4)
  shards = [
    list(_make(config, ("audio",), process_index=p, process_count=2).eval_batches((2,)))
    for p in (0, 1)
  ]
  assert [len(s) for s in shards] == [1, 1]
  masks = [s[0]["mask"].tolist() for s in shards]
  assert masks == [[1.0, 0.0], [1.0, 0.0]]  # 2 clips over 2 processes, padded to 2 rows each
  inputs = shards[0][0]["inputs"]
  assert list(inputs) == ["audio"] and inputs["audio"].shape == (2, 16, 7680)
  assert not inputs["audio"][1].any() and not shards[0][0]["labels"][1].any()


def test_audio_only_training_batches_are_dicts(prepared):
  _, out, _ = prepared
  data = _make(_config(out), ("audio",))
  assert list(data.example["inputs"]) == ["audio"]
  assert data.example["inputs"]["audio"].shape == (1, 7680)
  batch = next(data.train_batches(0, (2,)))
  assert list(batch["inputs"]) == ["audio"] and batch["inputs"]["audio"].shape == (2, 7680)


def test_model_facts_that_audioset_cannot_give_are_named(prepared):
  _, out, _ = prepared
  config = _config(out)
  with pytest.raises(ValueError, match=r"eval_windows=0: AudioSet evaluates at least 1 window"):
    _make(config, eval_windows=0)
  with pytest.raises(ValueError, match=r"audio input of 7000 samples: a window of 4 frames"):
    audioset.make_data(
      config,
      datasets.ModelFacts({"audio": (7000,), "video": SHAPES["video"]}, 527, 16),
      process_index=0,
      process_count=1,
    )
  with pytest.raises(ValueError, match=r"AudioSet gives inputs keyed by modality"):
    audioset.make_data(
      config, datasets.ModelFacts((7680,), 527, 16), process_index=0, process_count=1
    )


def _slice(batch, p):
  def take(value):
    return {k: take(v) for k, v in value.items()} if isinstance(value, dict) else value[p : p + 1]

  return take(batch)


def _assert_batches_equal(a, b):
  assert a.keys() == b.keys()
  for key in a:
    if isinstance(a[key], dict):
      _assert_batches_equal(a[key], b[key])
    else:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_two_steps_through_main(prepared, tmp_path):
  """The real command on the prepared tiny clips: 2 multi-label training steps of raw audio +
  video, then evaluation of both eval clips over their windows, reported as mAP."""
  _, out, _ = prepared
  workdir = tmp_path / "run"
  result = main_runner.run_main(
    "audioset.py:variant=audio_video,runlocal",
    workdir,
    f"--config.data.data_dir={out}",
    "--config.data.train_splits=('balanced_train',)",
    "--config.data.num_threads=2",
    "--config.model.audio_video.video.num_frames=4",
    "--config.model.audio_video.video.image_size=16",
    "--config.model.audio_video.audio.num_samples=7680",
    "--config.batch_size=2",
    "--config.eval_batch_size=2",
    "--config.total_steps=2",
    "--config.eval_every_steps=2",
    "--config.log_every_steps=1",
    num_devices=2,  # so that a batch of 2 of the 3 training clips splits over the devices
  )
  assert result.returncode == 0, result.stderr[-3000:]
  final = json.loads((workdir / "final.json").read_text())
  assert final["step"] == 2 and final["eval/count"] == 2
  assert 0.0 <= final["eval/mAP"] <= 1.0 and np.isfinite(final["eval/loss"])
  lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [m["step"] for m in lines if "train/loss" in m] == [1, 2]
