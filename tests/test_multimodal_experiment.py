"""experiments/multimodal_autoencoding/analyze.py on two short `multimodal_testing` runs (16
and 8 latents) trained here: the analysis agrees with the trainer's evaluation, its constant
predictions are those of the held-out clips, and it writes its results and figures."""

import functools
import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from configs import kinetics_autoencoding
from perceiver_jax import train

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = REPO / "experiments" / "multimodal_autoencoding" / "analyze.py"


@functools.cache
def _analyze():
  spec = importlib.util.spec_from_file_location("multimodal_analyze", SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _config(latents: int):
  config = kinetics_autoencoding.get_config("runlocal")
  config.model.num_latents = latents
  config.data.procedural.update(num_train=16, num_eval=5)
  config.total_steps = 2
  config.eval_every_steps = 1
  config.log_every_steps = 1
  config.checkpoint_every_steps = 2
  return config


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("multimodal_runs")
  workdirs = []
  for latents in (16, 8):
    workdir = str(root / f"latents_{latents}")
    train.train_and_evaluate(_config(latents), workdir)
    workdirs.append(workdir)
  return root, workdirs


def test_analysis_of_two_runs(runs, monkeypatch):
  root, workdirs = runs
  analyze = _analyze()
  monkeypatch.setattr(analyze, "TRAIN_CLIPS_FOR_MEANS", 32)  # 4 batches, not 64
  results_dir = root / "results"
  results = analyze.analyze(workdirs, str(results_dir))
  assert json.loads((results_dir / "results.json").read_text()) == results
  assert results["held_out_clips"] == 5
  first, second = results["runs"]
  assert (first["latents"], second["latents"]) == (16, 8)
  # Video inputs x input width / (latents x latent width): 64 patches of 4 x 16 x 16 frames,
  # 79 channels (the video's 48 values + 27 Fourier channels, the widest, + 4 of padding).
  assert first["compression"] == pytest.approx(64 * 79 / (16 * 32))
  assert second["compression"] == pytest.approx(2 * first["compression"])
  for run in results["runs"]:
    assert run["steps"] == 2
    for key in ("image_psnr", "audio_psnr", "top1"):
      assert run[key] == pytest.approx(run["trainer_eval"][key], abs=0.01)
  with pytest.raises(ValueError, match="image_psnr: this analysis"):
    broken = json.loads(json.dumps(results))
    broken["runs"][0]["trainer_eval"]["image_psnr"] += 0.1
    analyze.check_evaluate(broken)

  # The constant predictions, recomputed from the held-out clips.
  config = analyze.run_config(workdirs[0])
  clips = analyze.held_out_clips(config)
  means = analyze.training_means(config)
  silence = np.mean(
    [-10 * np.log10(np.mean(np.square(a - means["audio"]))) for a in clips["audio"]]
  )
  colour = np.mean(
    [-10 * np.log10(np.mean(np.square(v - means["colour"]))) for v in clips["image"]]
  )
  assert results["baselines"]["audio"]["silence"] == pytest.approx(silence, rel=1e-5)
  assert results["baselines"]["image"]["constant colour"] == pytest.approx(colour, rel=1e-5)
  assert abs(means["audio"]) < 0.05  # tones average to silence
  assert results["baselines"]["top1"]["chance"] == pytest.approx(0.1)

  table = analyze.summary_table(results)
  assert "| 16 x 32 latents |" in table and "| constant colour |" in table
  for name in ("reconstructions.png", "audio.png", "learning_curve.png"):
    assert Image.open(results_dir / name).size[0] > 300


def test_script_fails_in_one_line_without_a_run(tmp_path):
  result = subprocess.run(
    [sys.executable, str(SCRIPT), f"--workdirs={tmp_path}", f"--results_dir={tmp_path}"],
    cwd=REPO,
    env={**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"},
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == (
    f"error: --workdir={str(tmp_path)!r}: no config.json; not a training workdir"
  )
  assert not (tmp_path / "results.json").exists()
