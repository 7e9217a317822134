"""Tests for perceiver_jax/tools/av_io.py: write_clip / read_clip round trips and errors."""

import os

import av_fixtures
import numpy as np
import pytest
import soundfile

from perceiver_jax.tools import av_io

FPS, RATE = 25, 48_000


def _aligned_correlation(decoded: np.ndarray, original: np.ndarray, max_lag: int = 2048) -> float:
  """The best correlation of `decoded` with `original` over codec delays up to `max_lag`."""
  n = len(original) - max_lag
  return max(
    np.corrcoef(decoded[lag : lag + n], original[:n])[0, 1]
    for lag in range(min(max_lag, len(decoded) - n) + 1)
  )


@pytest.mark.parametrize("extension", [".mp4", ".mkv"])
def test_round_trip_keeps_frames_and_audio(tmp_path, extension):
  frames = av_fixtures.smooth_frames(20, 32, 32)
  audio = av_fixtures.tone(20 / FPS, RATE)
  path = str(tmp_path / f"clip{extension}")
  av_io.write_clip(path, frames, audio, fps=FPS, sample_rate=RATE)
  assert os.listdir(tmp_path) == [f"clip{extension}"]  # no temporary file left behind

  clip = av_io.read_clip(path, fps=FPS, sample_rate=RATE, size=32)
  assert (clip.fps, clip.sample_rate) == (FPS, RATE)
  assert clip.frames.shape == (20, 32, 32, 3) and clip.frames.dtype == np.uint8
  assert np.abs(clip.frames.astype(np.float32) - frames).mean() < 8
  assert clip.audio.dtype == np.float32 and len(clip.audio) == len(audio)
  assert _aligned_correlation(clip.audio, audio) > 0.9
  rms = np.sqrt(np.mean(clip.audio**2))
  np.testing.assert_allclose(rms, np.sqrt(np.mean(audio**2)), rtol=0.1)

  head = av_io.read_clip(path, fps=FPS, sample_rate=16_000, size=8, max_seconds=0.2)
  assert head.frames.shape == (5, 8, 8, 3) and head.audio.shape == (3200,)


def test_frames_are_centre_cropped_and_resized(tmp_path):
  # 24 x 40: 8 red columns each side of a 24 x 24 square, dark on its left, bright on its right.
  frames = np.zeros((5, 24, 40, 3), np.uint8)
  frames[:, :, :8] = frames[:, :, 32:] = (255, 0, 0)
  frames[:, :, 8:20] = 50
  frames[:, :, 20:32] = 200
  path = str(tmp_path / "wide.mp4")
  av_io.write_clip(path, frames, None, fps=FPS, sample_rate=RATE)
  clip = av_io.read_clip(path, fps=FPS, sample_rate=RATE, size=12).frames.astype(np.float32)
  assert clip.shape == (5, 12, 12, 3)
  np.testing.assert_allclose(clip[:, :, :5].mean(axis=(0, 1, 2)), [50] * 3, atol=8)
  np.testing.assert_allclose(clip[:, :, 7:].mean(axis=(0, 1, 2)), [200] * 3, atol=8)


def test_file_without_audio_gives_none_and_frames_at_the_target_rate(tmp_path):
  path = str(tmp_path / "silent.mp4")
  av_io.write_clip(path, av_fixtures.smooth_frames(12, 16, 24), None, fps=30, sample_rate=RATE)
  clip = av_io.read_clip(path, fps=FPS, sample_rate=RATE, size=16)
  assert clip.audio is None
  assert clip.frames.shape == (10, 16, 16, 3)  # 0.4 s at 25 fps


def test_unreadable_files_raise_clip_error(tmp_path):
  missing = tmp_path / "missing.mp4"
  with pytest.raises(av_io.ClipError, match=f"^{missing}: no such file$"):
    av_io.read_clip(str(missing), fps=FPS, sample_rate=RATE, size=8)
  corrupt = tmp_path / "corrupt.mp4"
  corrupt.write_bytes(b"not a video" * 100)
  with pytest.raises(av_io.ClipError, match=f"^{corrupt}: [^\n]+$"):
    av_io.read_clip(str(corrupt), fps=FPS, sample_rate=RATE, size=8)
  audio_only = tmp_path / "audio.wav"
  soundfile.write(audio_only, av_fixtures.tone(0.1, 16_000), 16_000)
  with pytest.raises(av_io.ClipError, match=f"^{audio_only}: no video stream$"):
    av_io.read_clip(str(audio_only), fps=FPS, sample_rate=RATE, size=8)


def test_write_clip_rejects_what_it_cannot_write(tmp_path):
  with pytest.raises(ValueError, match="15x16: H.264 needs even sizes"):
    av_io.write_clip(
      str(tmp_path / "odd.mp4"), np.zeros((2, 15, 16, 3), np.uint8), None, fps=1, sample_rate=RATE
    )
  with pytest.raises(ValueError, match="expected one of the extensions"):
    av_io.write_clip(
      str(tmp_path / "clip.gif"), np.zeros((2, 16, 16, 3), np.uint8), None, fps=1, sample_rate=RATE
    )
  assert os.listdir(tmp_path) == []
