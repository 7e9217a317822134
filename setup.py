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
    "dm-haiku>=0.0.13",
    "h5py>=3.10",
    "jax>=0.4.30",
    "ml-collections>=0.1.1",
    "numpy>=1.26",
    "optax>=0.2.2",
    "orbax-checkpoint>=0.11",
    "pillow>=10.0",
    "tensorboardX>=2.6",
  ],
  extras_require={
    "test": ["chex>=0.1.86", "pytest>=8.0", "pytest-xdist>=3.5", "ruff>=0.6"],
  },
)
