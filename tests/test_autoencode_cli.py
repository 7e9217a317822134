"""`python -m perceiver_jax.autoencode` and `tools.autoencode` on the tiny `multimodal_testing`
model (windows of 4 frames of 16 x 16 and 640 samples: 25 fps, 4 kHz), from a checkpoint in
the release's layout (a bare parameter mapping, as `video_autoencoding_checkpoint.pystate`).

The clip: 10 frames of 24 x 32 (two whole windows, 2 frames left over) with a 300 Hz tone at
8 kHz, written as H.264 + AAC in an .mp4.
"""

import os
import re
import subprocess
import sys

import av_fixtures
import jax
import numpy as np
import pytest

from configs import kinetics_autoencoding
from perceiver_jax import model
from perceiver_jax import official_format
from perceiver_jax import registry
from perceiver_jax import weight_formats
from perceiver_jax.tools import autoencode
from perceiver_jax.tools import av_io

REPO = os.path.join(os.path.dirname(__file__), "..")
CONFIG = "configs/kinetics_autoencoding.py:runlocal"
FRAMES = 10


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  root = tmp_path_factory.mktemp("autoencode")
  cfg = registry.get_model_config("multimodal_testing")
  forward = model.build_model(cfg)
  params, state = forward.init(jax.random.PRNGKey(0), model.dummy_inputs(cfg), is_training=True)
  checkpoint = str(root / "video_autoencoding.pystate")
  official_format.save_official_pickle(checkpoint, params, bare=True)
  frames = av_fixtures.smooth_frames(FRAMES, 24, 32)
  tone = av_fixtures.tone(FRAMES / 25, 8000, 300.0)
  av_io.write_clip(str(root / "clip.mp4"), frames, tone, fps=25, sample_rate=8000)
  av_io.write_clip(str(root / "silent.mp4"), frames, None, fps=25, sample_rate=8000)
  av_io.write_clip(str(root / "short.mp4"), frames[:3], tone[:960], fps=25, sample_rate=8000)
  (root / "corrupt.mp4").write_bytes(b"not a video" * 50)
  return root, checkpoint, cfg, forward, params, state


def _run(*args):
  return subprocess.run(
    [sys.executable, "-m", "perceiver_jax.autoencode", f"--config={CONFIG}", *args],
    cwd=REPO,
    capture_output=True,
    text=True,
    env={**os.environ, "JAX_PLATFORMS": "cpu"},
  )


def _printed(stdout: str, name: str) -> float:
  return float(re.search(rf"{name} PSNR (-?[0-9.]+) dB", stdout).group(1))


def test_reconstructs_a_clip_and_reports_what_the_model_computes(files):
  root, checkpoint, cfg, forward, params, state = files
  output = str(root / "recon.mkv")  # PCM audio: compared exactly below
  result = _run(f"--checkpoint={checkpoint}", f"--input={root / 'clip.mp4'}", f"--output={output}")
  assert result.returncode == 0, result.stderr
  assert "2 window(s) of 4 frames 16x16" in result.stdout
  assert len(re.findall(r"^top-\d class_\d+: [0-9.]+$", result.stdout, re.M)) == 5

  # The same windows through the model in one call each (every point at once), in-process.
  geo = autoencode.geometry(cfg)
  windows = autoencode.read_windows(str(root / "clip.mp4"), geo, silent_audio=False)
  assert windows.frames.shape == (2, 4, 16, 16, 3) and windows.audio.shape == (2, 640)
  inputs = {
    "image": windows.frames,
    "audio": windows.audio,
    "label": np.zeros((2, cfg.num_classes), np.float32),
  }
  out, _ = forward.apply(params, state, None, inputs, is_training=False)
  image = np.asarray(out["image"]).reshape(windows.frames.shape)
  audio = np.asarray(out["audio"]).reshape(windows.audio.shape)
  # Printed with 2 decimals; chunked and whole decoding differ by float rounding only.
  assert _printed(result.stdout, "video") == pytest.approx(
    autoencode.psnr(image, windows.frames), abs=0.006
  )
  assert _printed(result.stdout, "audio") == pytest.approx(
    autoencode.psnr(audio, windows.audio), abs=0.006
  )

  # The written file holds the reconstruction: 8 frames and 8 frames' audio.
  written = av_io.read_clip(output, fps=25, sample_rate=4000, size=16)
  assert written.frames.shape == (8, 16, 16, 3)
  assert written.audio is not None and len(written.audio) == 8 * 160
  expected = np.round(np.clip(image.reshape(8, 16, 16, 3), 0, 1) * 255)
  assert np.mean(np.abs(written.frames.astype(np.float64) - expected)) < 8
  np.testing.assert_allclose(written.audio, np.clip(audio.reshape(-1), -1, 1), atol=2e-4)


def test_chunks_do_not_change_the_reconstruction(files):
  root, _, cfg, forward, params, state = files
  geo = autoencode.geometry(cfg)
  windows = autoencode.read_windows(str(root / "clip.mp4"), geo, silent_audio=False)
  one = autoencode.reconstruct(autoencode.window_model(forward, params, state, geo, 1), windows)
  # 7 chunks do not divide the 1,024 pixels or 40 audio patches: the last one repeats points.
  seven = autoencode.reconstruct(autoencode.window_model(forward, params, state, geo, 7), windows)
  for a, b in ((one.frames, seven.frames), (one.audio, seven.audio), (one.logits, seven.logits)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(a).max())


def test_a_clip_without_audio_needs_silent_audio(files):
  root, checkpoint, *_ = files
  output = root / "silent_recon.mp4"  # AAC stores the 4 kHz audio at 8 kHz
  args = (f"--checkpoint={checkpoint}", f"--input={root / 'silent.mp4'}", f"--output={output}")
  result = _run(*args)
  assert result.returncode == 1 and not output.exists()
  assert result.stderr.strip().splitlines() == [
    f"error: {root / 'silent.mp4'}: no audio track; pass --silent_audio to reconstruct it with "
    "silence as its audio"
  ]
  result = _run(*args, "--silent_audio", "--chunks=3")
  assert result.returncode == 0, result.stderr
  assert "audio PSNR: none" in result.stdout and "video PSNR" in result.stdout
  assert av_io.read_clip(str(output), fps=25, sample_rate=4000, size=16).audio is not None


@pytest.mark.parametrize(
  "name, args, message",
  [
    ("short", (), r"3 frames at 25 fps, shorter than the model's window of 4 frames"),
    ("corrupt", (), r"corrupt\.mp4: "),
    ("missing", (), r"missing\.mp4: no such file"),
    ("clip", ("--chunks=0",), r"--chunks=0: must be at least 1"),
    ("clip", ("--output=recon.avi",), r"--output='recon\.avi': expected one of"),
  ],
)
def test_bad_inputs_end_in_one_line_and_write_nothing(files, name, args, message):
  root, checkpoint, *_ = files
  output = root / f"{name}_recon.mkv"
  result = _run(
    f"--checkpoint={checkpoint}", f"--input={root / name}.mp4", f"--output={output}", *args
  )
  assert result.returncode == 1 and not output.exists()
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and re.search(message, lines[0]), result.stderr


def test_a_checkpoint_of_another_model_is_refused(files, tmp_path):
  root, *_ = files
  cfg = kinetics_autoencoding.get_config("runlocal").model
  cfg.num_latents = 8  # the file's latent array is (8, 32); the model's is (16, 32)
  forward = model.build_model(cfg)
  params, _ = forward.init(jax.random.PRNGKey(0), model.dummy_inputs(cfg), is_training=True)
  wrong = str(tmp_path / "wrong.pystate")
  official_format.save_official_pickle(wrong, params, bare=True)
  result = _run(f"--checkpoint={wrong}", f"--input={root / 'clip.mp4'}", "--output=x.mkv")
  assert result.returncode == 1
  assert result.stderr.startswith("error: params do not match the model")


def test_another_kind_of_model_is_refused(files):
  root, checkpoint, *_ = files
  result = subprocess.run(
    [
      sys.executable,
      "-m",
      "perceiver_jax.autoencode",
      "--config=configs/flow.py:runlocal",
      f"--checkpoint={checkpoint}",
      f"--input={root / 'clip.mp4'}",
      "--output=x.mkv",
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
  )
  assert result.returncode == 1
  assert "not a multimodal autoencoder" in result.stderr


def test_a_safetensors_checkpoint_gives_the_same_reconstruction(files):
  """The CLI takes this package's safetensors (here with the model config stored) exactly as
  the release's pickle."""
  root, checkpoint, cfg, _, params, state = files
  converted = str(root / "video_autoencoding.safetensors")
  weight_formats.write(converted, weight_formats.Weights(params, state, cfg), "safetensors")
  printed = []
  for name, path in (("a", checkpoint), ("b", converted)):
    output = str(root / f"{name}.mkv")
    result = _run(f"--checkpoint={path}", f"--input={root / 'clip.mp4'}", f"--output={output}")
    assert result.returncode == 0, result.stderr
    printed.append(
      [line for line in result.stdout.splitlines() if "PSNR" in line or "top-" in line]
    )
  assert printed[0] == printed[1] and len(printed[0]) >= 6
