"""The command-line flags that the clip preparations' scripts share.

`scripts/prepare_audioset.py` and `scripts/prepare_kinetics.py` call `define_clip_flags()`
when they are loaded (entry points define their flags; importing this module defines none),
adopt them as their key flags (for `--help`), and pass them to the preparation's `prepare`
with `ClipFlags.prepare_args`. Each script defines its dataset's own
flags (its CSVs, what to do without video or audio) itself.
"""

from __future__ import annotations

from typing import NamedTuple

from absl import flags

from perceiver_jax.data.prepare import clips

_DEFAULTS = clips.Options()


class ClipFlags(NamedTuple):
  """The holders of the flags `define_clip_flags` defines."""

  clips_dir: flags.FlagHolder[str]
  output_dir: flags.FlagHolder[str]
  sample_rate: flags.FlagHolder[int]
  fps: flags.FlagHolder[int]
  frame_size: flags.FlagHolder[int]
  jpeg_quality: flags.FlagHolder[int]
  examples_per_shard: flags.FlagHolder[int]
  num_workers: flags.FlagHolder[int]

  def prepare_args(self, **overrides) -> dict:
    """The keyword arguments of the preparations' `prepare` that these flags give: clips_dir,
    output_dir, options (`clips.Options`, with `overrides`: the fields the script sets),
    examples_per_shard and num_workers."""
    options = clips.Options(
      sample_rate=self.sample_rate.value,
      fps=self.fps.value,
      frame_size=self.frame_size.value,
      jpeg_quality=self.jpeg_quality.value,
      **overrides,
    )
    return {
      "clips_dir": self.clips_dir.value,
      "output_dir": self.output_dir.value,
      "options": options,
      "examples_per_shard": self.examples_per_shard.value,
      "num_workers": self.num_workers.value,
    }


def define_clip_flags() -> ClipFlags:
  """Defines the shared flags; call it once, from the script.

  absl counts them as this module's flags: the script lists them in its `--help` after
  `flags.adopt_module_key_flags(perceiver_jax.data.prepare.flags)`.
  """
  return ClipFlags(
    clips_dir=flags.DEFINE_string("clips_dir", None, "folder of downloaded clips", required=True),
    output_dir=flags.DEFINE_string("output_dir", None, "where the shards go", required=True),
    sample_rate=flags.DEFINE_integer("sample_rate", _DEFAULTS.sample_rate, "audio rate in Hz"),
    fps=flags.DEFINE_integer("fps", _DEFAULTS.fps, "video frames per second"),
    frame_size=flags.DEFINE_integer(
      "frame_size", _DEFAULTS.frame_size, "shorter side of the stored frames"
    ),
    jpeg_quality=flags.DEFINE_integer(
      "jpeg_quality", _DEFAULTS.jpeg_quality, "JPEG quality of the stored frames"
    ),
    examples_per_shard=flags.DEFINE_integer(
      "examples_per_shard", 1024, "clips per array_record file"
    ),
    num_workers=flags.DEFINE_integer("num_workers", 1, "decoding processes"),
  )
