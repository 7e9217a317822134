"""Test clip contents shared by the audio-video tests: smooth frames and a tone."""

import numpy as np


def smooth_frames(num_frames: int, height: int, width: int) -> np.ndarray:
  """uint8 [T, H, W, 3]: colour gradients that drift a little from frame to frame (smooth, so
  that a lossy codec keeps them close)."""
  t, y, x = np.meshgrid(
    np.arange(num_frames), np.linspace(0, 1, height), np.linspace(0, 1, width), indexing="ij"
  )
  rgb = [40 + 150 * x + 3 * t, 60 + 120 * y, 200 - 80 * (x + y) + 2 * t]
  return np.clip(np.stack(rgb, axis=-1), 0, 255).round().astype(np.uint8)


def tone(seconds: float, rate: int, frequency: float = 440.0, amplitude: float = 0.5) -> np.ndarray:
  """float32 [seconds * rate]: a sine tone."""
  t = np.arange(round(seconds * rate)) / rate
  return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.float32)
