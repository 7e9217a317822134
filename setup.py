"""Installs perceiver-jax: Perceiver and Perceiver IO in JAX/Haiku."""

import setuptools

setuptools.setup(
  name="perceiver-jax",
  version="0.1.0",
  description="Perceiver and Perceiver IO in JAX/Haiku: models, training, reproductions.",
  long_description=open("README.md").read(),
  long_description_content_type="text/markdown",
  packages=setuptools.find_packages(include=["perceiver_jax", "perceiver_jax.*"]),
  package_data={"perceiver_jax": ["data/*.txt"]},
  python_requires=">=3.11",
  install_requires=[
    "absl-py>=2.1",
    "array-record>=0.8",  # ImageNet/AudioSet array_record shards
    "dm-haiku>=0.0.13",
    "grain>=0.2.18",  # input pipelines over array_record
    "h5py>=3.10",
    "jax>=0.4.30",
    "matplotlib>=3.8",  # the plots of scripts/reproduce.py
    "ml-collections>=0.1.1",
    "numpy>=1.26",
    "optax>=0.2.2",
    "orbax-checkpoint>=0.11",
    "pillow>=10.0",
    "safetensors>=0.4",  # perceiver_jax/safetensors_io.py (numpy only, no torch)
    "tensorboardX>=2.6",
    "tensorflow-datasets>=4.9.10",  # reads TFDS array_record datasets without TensorFlow
  ],
  extras_require={
    # AudioSet: scripts/prepare_audioset.py and the loader (lower bounds: the tested versions).
    "audioset": [
      "array-record>=0.8",
      "av>=18.0",
      "grain>=0.2.18",
      "scipy>=1.11",
      "soundfile>=0.12",
    ],
    # TFDS's own ImageNet builder (scripts/build_imagenet.py --backend=tensorflow).
    # importlib_resources: TFDS imports it when it prepares one of its own datasets.
    "tf": ["importlib_resources>=6.0", "tensorflow>=2.16"],
    "test": [
      "array-record>=0.8",
      "av>=18.0",
      "chex>=0.1.86",
      "grain>=0.2.18",
      "pytest>=8.0",
      "pytest-xdist>=3.5",
      "ruff>=0.6",
      "scipy>=1.11",
      "soundfile>=0.12",
    ],
  },
)
