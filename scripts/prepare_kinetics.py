"""Turns Kinetics-700-2020 annotation CSVs and downloaded clips into array_record shards.

  pip install -e .[audioset]   # PyAV and soundfile
  python scripts/prepare_kinetics.py --annotations=train.csv,validate.csv \
      --clips_dir=kinetics700_2020/ --output_dir=kinetics_records/ --num_workers=16

The CSV header, the clip naming, the labels, the record format (AudioSet's) and the skip
counts are described in perceiver_jax/data/prepare/kinetics.py, which does the work; this is
its command line.
"""

from __future__ import annotations

from absl import app
from absl import flags

from perceiver_jax.data import audioset
from perceiver_jax.data.prepare import audioset as prepare_audioset
from perceiver_jax.data.prepare import kinetics as prepare_kinetics

_ANNOTATIONS = flags.DEFINE_list(
  "annotations", None, "annotation CSVs, one split each", required=True
)
_CLIPS_DIR = flags.DEFINE_string("clips_dir", None, "folder of downloaded clips", required=True)
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "where the shards go", required=True)
_CLASSES = flags.DEFINE_string("classes", None, "class names, one per line (default: the 700)")
_SAMPLE_RATE = flags.DEFINE_integer("sample_rate", audioset.SAMPLE_RATE, "audio rate in Hz")
_FPS = flags.DEFINE_integer("fps", audioset.FPS, "video frames per second")
_FRAME_SIZE = flags.DEFINE_integer("frame_size", 256, "shorter side of the stored frames")
_JPEG_QUALITY = flags.DEFINE_integer("jpeg_quality", 90, "JPEG quality of the stored frames")
_KEEP_NO_AUDIO = flags.DEFINE_bool(
  "keep_no_audio", False, "store clips without an audio stream with silent audio (else skip)"
)
_PER_SHARD = flags.DEFINE_integer("examples_per_shard", 1024, "clips per array_record file")
_NUM_WORKERS = flags.DEFINE_integer("num_workers", 1, "decoding processes")


def main(argv):
  del argv
  options = prepare_audioset.Options(
    sample_rate=_SAMPLE_RATE.value,
    fps=_FPS.value,
    frame_size=_FRAME_SIZE.value,
    jpeg_quality=_JPEG_QUALITY.value,
    silent_without_audio=_KEEP_NO_AUDIO.value,
  )
  summaries = prepare_kinetics.prepare(
    _ANNOTATIONS.value,
    _CLIPS_DIR.value,
    _OUTPUT_DIR.value,
    options,
    classes=_CLASSES.value,
    examples_per_shard=_PER_SHARD.value,
    num_workers=_NUM_WORKERS.value,
  )
  for summary in summaries:
    print(prepare_audioset.describe(summary))


if __name__ == "__main__":
  app.run(main)
