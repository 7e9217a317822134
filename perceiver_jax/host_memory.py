"""Host memory for XLA:CPU: keep freed memory for the next step instead of returning it.

Every call of a compiled XLA:CPU program allocates its output and temporary buffers and
frees them when they are dropped. glibc's malloc serves blocks that large with a fresh
`mmap` and returns them with `munmap`, so on every training step the kernel maps and
zero-fills that memory again: 230,000 page faults and a third of a second of system CPU
time a step for the io-small benchmark (README, "Performance"). glibc's own settings do
not cure it (with one arena and no `mmap` its heap fragments and grows on every call).
jemalloc and tcmalloc keep freed blocks of each size and hand them out again.

`use_retained_memory` restarts the process once, before anything else runs, with jemalloc
(Debian's `libjemalloc2`, which `scripts/setup.sh` installs where it can) or else tcmalloc
preloaded, and jemalloc told to keep its freed pages. The training and benchmark command
lines call it first. Where neither library is installed it changes nothing; set
`PERCEIVER_JAX_MALLOC=default` to opt out.
"""

from __future__ import annotations

import ctypes.util
import os
import sys
import time

OPT_OUT = "PERCEIVER_JAX_MALLOC"
# Set in the restarted process: which allocator it runs with.
MARK = "PERCEIVER_JAX_ALLOCATOR"
# jemalloc: never give freed pages back (the process's peak stays what it was; the next
# step reuses them), and no purging thread.
JEMALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1,background_thread:false"
LIBRARIES = ("jemalloc", "tcmalloc_minimal", "tcmalloc")


def allocator_library() -> str | None:
  """The first of `LIBRARIES` installed (its file name, for the dynamic loader), if any."""
  for name in LIBRARIES:
    found = ctypes.util.find_library(name)
    if found:
      return found
  return None


def should_restart(environ=os.environ) -> bool:
  """Whether `use_retained_memory` would restart a process with environment `environ`:
  on Linux, unless already restarted, opted out, or a library is preloaded already."""
  if sys.platform != "linux" or MARK in environ or environ.get(OPT_OUT, "") == "default":
    return False
  return "LD_PRELOAD" not in environ


def use_retained_memory() -> None:
  """Restarts this Python process (same interpreter, same arguments) with the allocator
  preloaded, or returns at once where `should_restart` says no or no library is found.
  Call it first thing in an entry point, before any thread or computation starts."""
  if not should_restart():
    return
  library = allocator_library()
  if library is None:
    return
  env = {**os.environ, "LD_PRELOAD": library, MARK: library}
  if "jemalloc" in library:
    env["MALLOC_CONF"] = ",".join(filter(None, [os.environ.get("MALLOC_CONF"), JEMALLOC_CONF]))
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


# jemalloc's `arena.<i>.purge` with i = MALLCTL_ARENAS_ALL (4096): every arena.
_JEMALLOC_PURGE_ALL = b"arena.4096.purge"


def release_free_memory() -> str | None:
  """Returns the memory that the allocator keeps freed to the system, now; names the
  allocator it asked, or None where it knows none.

  Retention pays on every step, but what compilation and initialisation freed is kept as
  well and is not reused by the step's large buffers, so it raises the process's peak for
  good. `benchmarking.prepare_train_step` calls it once, after compiling and initialising
  and before the first step (imagenet-long, chunked: peak RSS 1.4-1.9 -> 1.0 GiB); later
  steps refill and keep their own buffers.
  """
  if sys.platform != "linux":
    return None
  process = ctypes.CDLL(None)
  mallctl = getattr(process, "mallctl", None)  # jemalloc, preloaded
  if mallctl is not None:
    if mallctl(_JEMALLOC_PURGE_ALL, None, None, None, ctypes.c_size_t(0)) == 0:
      return "jemalloc"
    return None
  release = getattr(process, "MallocExtension_ReleaseFreeMemory", None)  # tcmalloc
  if release is not None:
    release()
    return "tcmalloc"
  trim = getattr(process, "malloc_trim", None)  # glibc
  if trim is not None:
    trim(ctypes.c_size_t(0))
    return "glibc"
  return None


# How long a finished XLA:CPU step may take to free its temporaries (measured: microseconds).
STEP_CLEANUP_S = 0.002


def wait_for_step_cleanup() -> None:
  """Waits, after a step's outputs are ready, until XLA:CPU has freed its temporaries.

  XLA:CPU marks a step's outputs ready a moment before its own thread frees the step's
  temporaries. A step dispatched at once on those outputs starts in that moment and
  allocates its own temporaries while the previous ones are still held; the allocator then
  holds two sets, and with retained memory (`use_retained_memory`) keeps both for good. A
  trace of the large allocations shows it (imagenet-long chunked: the next step's 207 MB
  block allocated before the last one was freed), at a random step in 3 of 4 runs of 5
  steps, peak RSS 0.9 -> 1.1 GiB; with this wait between steps, in none of 4 runs of 6.
  The benchmarks call it between timed steps, outside the timing: a step's peak memory is
  then its own. The training loop queues the next step before the last one ends, so on a
  CPU it may hold two steps' temporaries (README, "Performance").
  """
  time.sleep(STEP_CLEANUP_S)
