"""One training run per workdir: an exclusive `fcntl.flock` on `workdir/.lock`.

Two runs writing one workdir would interleave their metrics, delete each other's checkpoints
and crash in orbax's clean-up. `hold(workdir)` takes the lock without waiting; a second run on a
live workdir gets `WorkdirInUseError` at once, naming the workdir and the holder (its pid and
host, which the holder writes into the lock file). The kernel drops a flock when its holder's
file descriptor is closed, so a killed run (even SIGKILL) never leaves the lock stuck; the file
itself stays and is simply locked again by the next run.

flock works between processes on one machine and, on most network filesystems (NFS v4,
Lustre, GPFS), between machines. In a multi-process run the processes share the workdir: only
process 0 writes there, so only it takes the lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
from collections.abc import Iterator

LOCK_FILE = ".lock"


class WorkdirInUseError(OSError):
  """Another live process holds the workdir's lock; the message names the workdir and it."""


def _holder(fd: int) -> str:
  os.lseek(fd, 0, os.SEEK_SET)
  text = os.read(fd, 256).decode(errors="replace").strip()
  return text or "another process (it has not written its pid yet)"


@contextlib.contextmanager
def hold(workdir: str, *, enabled: bool = True) -> Iterator[None]:
  """Holds the exclusive lock on `workdir` (which must exist) for the body of the `with`.

  Args:
    workdir: the run's directory.
    enabled: False takes no lock (the processes other than 0 of a multi-process run).

  Raises:
    WorkdirInUseError: another process holds the lock.
  """
  if not enabled:
    yield
    return
  path = os.path.join(workdir, LOCK_FILE)
  # Not O_TRUNC: opening must not erase the pid that a live holder wrote.
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
        raise
      raise WorkdirInUseError(
        f"workdir {os.path.abspath(workdir)} is in use by {_holder(fd)} (lock file {path}); "
        "wait for that run to end or stop it, or use another --workdir"
      ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode(), 0)
    yield
  finally:
    os.close(fd)  # releases the lock
