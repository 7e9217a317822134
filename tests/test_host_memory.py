"""host_memory: the process restarts once with an allocator that keeps freed memory, and
the buffers of XLA:CPU's calls then stop faulting in fresh pages."""

import os
import subprocess
import sys

import pytest

from perceiver_jax import host_memory

needs_library = pytest.mark.skipif(
  sys.platform != "linux" or host_memory.allocator_library() is None,
  reason="no jemalloc or tcmalloc installed (scripts/setup.sh installs libjemalloc2)",
)

# Calls a compiled function with a fresh 64 MiB output many times, dropping the last one,
# and prints the allocator, the minor page faults per call of the last calls and the peak
# RSS in MiB.
_PROGRAM = """
import os, resource
from perceiver_jax import host_memory
host_memory.use_retained_memory()
import jax, jax.numpy as jnp
f = jax.jit(lambda x: x * 2.0 + 1.0)
x = jnp.ones((4096, 4096))
y = None
for _ in range(10):
  y = None
  y = f(x).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(8):
  y = None
  y = f(x).block_until_ready()
usage = resource.getrusage(resource.RUSAGE_SELF)
print(os.environ.get(host_memory.MARK), (usage.ru_minflt - before) // 8, usage.ru_maxrss // 1024)
"""


def _output(program: str, **env) -> list[str]:
  """What `program` prints, run with this environment minus any allocator settings."""
  drop = ("LD_PRELOAD", "MALLOC_CONF", host_memory.MARK, host_memory.OPT_OUT)
  environ = {k: v for k, v in os.environ.items() if k not in drop}
  environ.update(JAX_PLATFORMS="cpu", XLA_FLAGS="", **env)
  return subprocess.run(
    [sys.executable, "-c", program], env=environ, capture_output=True, text=True, check=True
  ).stdout.split()


def _run(**env) -> tuple[str, int, int]:
  out = _output(_PROGRAM, **env)
  return out[0], int(out[1]), int(out[2])


def test_should_restart_respects_the_user():
  assert not host_memory.should_restart({"LD_PRELOAD": "libother.so"})
  assert not host_memory.should_restart({host_memory.OPT_OUT: "default"})
  assert not host_memory.should_restart({host_memory.MARK: "libjemalloc.so.2"})
  assert host_memory.should_restart({}) == (sys.platform == "linux")


@needs_library
def test_restart_preloads_the_allocator_and_stops_the_page_faults():
  allocator, retained_faults, retained_rss = _run()
  assert allocator == host_memory.allocator_library()
  allocator, default_faults, default_rss = _run(**{host_memory.OPT_OUT: "default"})
  assert allocator == "None"
  # A 64 MiB output is 16,384 pages: glibc maps it afresh on every call; the allocator
  # hands the freed block out again, and the process holds no more memory for it.
  assert default_faults > 8_000
  assert retained_faults < default_faults / 20
  assert retained_rss < default_rss + 100


# Frees 256 MiB of XLA:CPU buffers, then prints the allocator that release_free_memory
# asked and the resident MiB before and after it.
_RELEASE_PROGRAM = """
from perceiver_jax import host_memory
host_memory.use_retained_memory()
import jax, jax.numpy as jnp

def resident_mib():
  with open("/proc/self/status") as f:
    return next(int(l.split()[1]) // 1024 for l in f if l.startswith("VmRSS"))

add = jax.jit(lambda x, i: x + i)
ys = [add(jnp.zeros((4096, 4096)), float(i)).block_until_ready() for i in range(4)]
ys = None
before = resident_mib()
name = host_memory.release_free_memory()
print(name, before, resident_mib())
"""


@needs_library
def test_release_hands_the_kept_memory_back():
  name, before, after = _output(_RELEASE_PROGRAM)
  before, after = int(before), int(after)
  assert name in ("jemalloc", "tcmalloc")
  # Four freed 64 MiB outputs were kept; the release returns most of them.
  assert before - after > 128, (before, after)


def test_release_without_a_preloaded_allocator_trims_glibc():
  # In this (pytest) process no allocator is preloaded unless the user did it.
  if "LD_PRELOAD" in os.environ or sys.platform != "linux":
    pytest.skip("an allocator is preloaded here, or not Linux")
  assert host_memory.release_free_memory() == "glibc"
