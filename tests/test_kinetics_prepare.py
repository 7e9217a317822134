"""Tests for perceiver_jax/data/prepare/kinetics.py (+ prepare/clips.py's shard writer) and
data/kinetics_classes.py on tiny clips."""

import json
import os

import av_fixtures
import grain
import numpy as np
import pytest

from perceiver_jax.data import audioset
from perceiver_jax.data import image_ops
from perceiver_jax.data import kinetics_classes
from perceiver_jax.data.prepare import clips as prepare_clips
from perceiver_jax.data.prepare import kinetics as prepare_kinetics
from perceiver_jax.tools import av_io

SECONDS = 0.4  # 10 frames at 25 fps
HEADER = "label,youtube_id,time_start,time_end,split\n"
CLASSES = ("archery", "bowling", "playing guitar")


def _write(path, fps, audio_rate=0, height=48, width=64):
  frames = av_fixtures.smooth_frames(round(SECONDS * fps), height, width)
  audio = av_fixtures.tone(SECONDS, audio_rate) if audio_rate else None
  av_io.write_clip(str(path), frames, audio, fps=fps, sample_rate=audio_rate or 48_000)


@pytest.fixture(scope="module")
def kinetics(tmp_path_factory):
  root = tmp_path_factory.mktemp("kinetics")
  clips = root / "clips"
  for name in CLASSES:
    (clips / name).mkdir(parents=True)
  (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
  _write(clips / "archery" / "aaaaaaaaaaa_000010_000020.mp4", fps=25, audio_rate=44_100)
  _write(clips / "bowling" / "bbbbbbbbbbb.mkv", fps=30, audio_rate=32_000, height=32, width=32)
  (clips / "bowling" / "ddddddddddd_000000_000010.mp4").write_bytes(b"not a video" * 100)
  _write(clips / "playing guitar" / "eeeeeeeeeee_000005_000015.MP4", fps=25)  # no audio
  (root / "train.csv").write_text(
    HEADER
    + "archery,aaaaaaaaaaa,10,20,train\n"
    + "bowling,bbbbbbbbbbb,0,10,train\n"
    + "archery,ccccccccccc,30,40,train\n"  # missing
    + "bowling,ddddddddddd,0,10,train\n"  # corrupt
    + '"playing guitar",eeeeeeeeeee,5,15,train\n'  # no audio
  )
  (root / "test.csv").write_text(
    "youtube_id,time_start,time_end,split\naaaaaaaaaaa,10,20,test\neeeeeeeeeee,5,15,test\n"
  )
  return root


def _records(out, split):
  source = grain.sources.ArrayRecordDataSource(audioset.shard_paths(str(out), split))
  return {e["ytid"]: e for e in (audioset.decode_example(source[i]) for i in range(len(source)))}


def _prepare(kinetics, out, csvs, examples_per_shard=1, **options):
  return prepare_kinetics.prepare(
    [str(kinetics / f"{name}.csv") for name in csvs],
    str(kinetics / "clips"),
    str(out),
    prepare_clips.Options(frame_size=20, **options),
    classes=str(kinetics / "classes.txt"),
    examples_per_shard=examples_per_shard,
  )


def test_preparation_counts_skips_and_writes_decodable_records(kinetics, tmp_path):
  (train,) = _prepare(kinetics, tmp_path, ["train"])
  expected = {"segments": 5, "written": 2, "missing": 1, "unreadable": 1, "no_audio": 1}
  assert {key: train[key] for key in expected} == expected and train["shards"] == 2
  assert train["skipped"][0] == "missing ccccccccccc"
  assert train["skipped"][1].startswith("unreadable ddddddddddd: ")
  assert train["skipped"][2] == "no_audio eeeeeeeeeee"
  assert "(missing 1, unreadable 1, no_audio 1)" in prepare_clips.describe(train)
  with open(tmp_path / "train.json") as f:
    assert json.load(f) == train
  assert sorted(os.listdir(tmp_path)) == [
    "train-00000.array_record",
    "train-00001.array_record",
    "train.json",
  ]

  records = _records(tmp_path, "train")
  assert sorted(records) == ["aaaaaaaaaaa", "bbbbbbbbbbb"]
  for ytid, record in records.items():
    assert (record["fps"], record["sample_rate"]) == (25, 48_000)
    assert len(record["frames"]) == 10, ytid  # 25 fps, also from the 30 fps clip
    # Resampled from 44.1 kHz (AAC, which pads its last frame of 1024 samples) and 32 kHz (PCM).
    assert 0 <= len(record["audio"]) - SECONDS * 48_000 <= 1024 * 48_000 / 44_100, ytid
    rms = np.sqrt(np.mean((record["audio"][2000:-2000] / 32768.0) ** 2))
    np.testing.assert_allclose(rms, 0.5 / np.sqrt(2), rtol=0.1, err_msg=ytid)
  assert records["aaaaaaaaaaa"]["labels"].tolist() == [0]
  assert records["bbbbbbbbbbb"]["labels"].tolist() == [1]
  assert records["aaaaaaaaaaa"]["start_seconds"] == 10.0
  assert image_ops.decode_image(records["aaaaaaaaaaa"]["frames"][0], "a").shape == (20, 27, 3)
  assert image_ops.decode_image(records["bbbbbbbbbbb"]["frames"][0], "b").shape == (20, 20, 3)

  # A second run replaces the split's shards: none of the first run's is left.
  (train,) = _prepare(kinetics, tmp_path, ["train"], examples_per_shard=2, with_video=False)
  assert (train["written"], train["shards"]) == (2, 1)
  assert sorted(os.listdir(tmp_path)) == ["train-00000.array_record", "train.json"]
  assert [len(r["frames"]) for r in _records(tmp_path, "train").values()] == [0, 0]


def test_unlabelled_split_and_clips_kept_with_silent_audio(kinetics, tmp_path):
  (test,) = _prepare(kinetics, tmp_path, ["test"], silent_without_audio=True)
  assert (test["split"], test["written"], test["no_audio"]) == ("test", 2, 0)
  records = _records(tmp_path, "test")
  assert [r["labels"].tolist() for r in records.values()] == [[-1], [-1]]
  silent = records["eeeeeeeeeee"]
  assert len(silent["frames"]) == 10 and silent["audio"].shape == (10 * 1920,)
  assert not silent["audio"].any()


def test_bad_csvs_name_file_and_line(tmp_path):
  indices = {name: i for i, name in enumerate(CLASSES)}
  bad = tmp_path / "train.csv"
  bad.write_text(HEADER + "archery,aaaaaaaaaaa,10,20,train\nbowling,bbbbbbbbbbb,0,train\n")
  with pytest.raises(ValueError, match=f"^{bad}:3: expected 5 fields, got 4$"):
    prepare_kinetics.read_annotations(str(bad), indices)
  bad.write_text(HEADER + "archery,aaaaaaaaaaa,ten,20,train\n")
  with pytest.raises(ValueError, match=f"^{bad}:2: time_start/time_end 'ten', '20'"):
    prepare_kinetics.read_annotations(str(bad), indices)
  bad.write_text(HEADER + "archery,aaaaaaaaaaa,10,20,train\njuggling cats,bbbbbbbbbbb,0,10,train\n")
  with pytest.raises(ValueError, match=f"^{bad}:3: label 'juggling cats' is not one of the 3 "):
    prepare_kinetics.read_annotations(str(bad), indices)
  bad.write_text("youtube_id,label,start\naaaaaaaaaaa,archery,10\n")
  with pytest.raises(ValueError, match=f"^{bad}: unknown header 'youtube_id,label,start'[^\n]*$"):
    prepare_kinetics.read_annotations(str(bad), indices)


def test_packaged_classes_are_the_700_kinetics_classes(tmp_path):
  names = kinetics_classes.load_class_names()
  assert len(names) == len(set(names)) == kinetics_classes.NUM_CLASSES == 700
  assert names[:2] == ["abseiling", "acting in play"] and names[-1] == "zumba"
  assert names == sorted(names)  # the release's order is the alphabetical one
  repeated = tmp_path / "classes.txt"
  repeated.write_text("archery\nbowling\narchery\n")
  with pytest.raises(ValueError, match=r"repeated \['archery'\]"):
    kinetics_classes.load_class_names(str(repeated))


def _record_or_fail(name):
  if name == "bad":
    raise TypeError("a bug, not a damaged clip")
  return name.encode()


def test_a_failed_run_leaves_no_summary_and_no_partial_shards(kinetics, tmp_path):
  _prepare(kinetics, tmp_path, ["train"])
  jobs = [prepare_clips.Job(n, _record_or_fail, (n,)) for n in ("good", "good", "bad")]
  with pytest.raises(TypeError, match="a bug"):
    prepare_clips.write_split(jobs, str(tmp_path), "train", examples_per_shard=1)
  # The first run's shards are still there, but without a summary that vouches for them.
  assert sorted(os.listdir(tmp_path)) == ["train-00000.array_record", "train-00001.array_record"]
