"""Bounds what a pickle can make the unpickler do, read from its opcodes before anything is built.

A small pickle can demand far more than its size: a dict memoized once and referenced 20,000
times by 20,000 modules expands to 400 million entries when the tree is walked, and a key of
10^6 nested tuples overflows the C stack when the unpickler hashes it. `check_pickle` replays
the opcode stream (`pickletools.genops`) on a graph of placeholders, one per object the
unpickler would build, and refuses the file before `pickle.load` runs when

* the file is larger than `MAX_FILE_BYTES`,
* the stream has more than `MAX_OPCODES` opcodes,
* any object, each shared object counted once per reference, expands to more than
  `MAX_OBJECTS` objects,
* objects nest deeper than `MAX_DEPTH`, or an object contains itself,
* a length field runs past the end of the file (nothing that size is allocated).

A Perceiver IO checkpoint is a few levels of dicts holding a few hundred to a few thousand
arrays (~30 opcodes and ~40 expanded objects each, nesting depth ~10), so the size, opcode and
object bounds are 10 times or more what such a file needs, and the depth bound 3 times.
"""

from __future__ import annotations

import os
import pickletools
from typing import BinaryIO

MAX_FILE_BYTES = 4 << 30  # 1e9 float32 parameters; the largest Perceiver IO model has 0.2e9.
MAX_OPCODES = 2_000_000
MAX_OBJECTS = 4_000_000
MAX_DEPTH = 32

# Opcodes that add their other operands to the object below them instead of making a new one.
_MUTATING = frozenset({"SETITEM", "SETITEMS", "APPEND", "APPENDS", "ADDITEMS", "BUILD"})
_PUT = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_GET = frozenset({"GET", "BINGET", "LONG_BINGET"})


class PickleBoundError(ValueError):
  """A pickle exceeds a bound, or its opcodes could not run; the message is one line."""


class _BoundedReader:
  """A file wrapper whose reads may not run past the end of the file: a length field in
  the stream claiming gigabytes fails here instead of allocating them."""

  def __init__(self, f: BinaryIO, size: int):
    self._f, self._left = f, size

  def read(self, n: int = -1) -> bytes:
    if n > self._left:
      raise PickleBoundError("not a readable pickle (empty or truncated file)")
    data = self._f.read(n)
    self._left -= len(data)
    return data

  def readline(self) -> bytes:
    line = self._f.readline()
    self._left -= len(line)
    return line

  def tell(self) -> int:
    return self._f.tell()


def check_pickle(f: BinaryIO) -> None:
  """Checks the pickle in `f` (a seekable binary file, at its start) against the bounds.

  Builds nothing from the file. Leaves `f` where it was.

  Raises:
    PickleBoundError: a bound is exceeded, or the stream is malformed (a GET of an unknown
      memo key, a stack underflow, an unknown opcode, a truncated object).
  """
  start = f.tell()
  size = os.fstat(f.fileno()).st_size - start
  if size > MAX_FILE_BYTES:
    raise PickleBoundError(
      f"refusing a file of {size} bytes: a Perceiver checkpoint holds at most "
      f"{MAX_FILE_BYTES >> 30} GiB"
    )
  try:
    children = _object_graph(_BoundedReader(f, size))
  finally:
    f.seek(start)
  _check_graph(children)


def _object_graph(reader: _BoundedReader) -> list:
  """Replays the stream; returns each object's children (node ids), indexed by node id."""
  children: list = []  # A tuple, or a list once an opcode has added to the object.
  depth: list[int] = []  # A lower bound, to stop a deep nest early; _check_graph is exact.
  stack: list[int] = []
  marks: list[int] = []
  memo: dict[int, int] = {}
  for count, (opcode, arg, pos) in enumerate(pickletools.genops(reader)):
    if count >= MAX_OPCODES:
      raise PickleBoundError(f"refusing a pickle of more than {MAX_OPCODES} opcodes")
    name, fence = opcode.name, marks[-1] if marks else 0
    if name in _PUT or name == "MEMOIZE":
      if len(stack) <= fence:
        raise PickleBoundError(f"malformed pickle: {name} on an empty stack at byte {pos}")
      memo[len(memo) if name == "MEMOIZE" else arg] = stack[-1]
      continue
    if name in _GET:
      if arg not in memo:
        raise PickleBoundError(f"malformed pickle: {name} of unknown key {arg} at byte {pos}")
      stack.append(memo[arg])
      continue
    if name == "POP" and marks and marks[-1] == len(stack):  # POP of a mark drops the mark.
      marks.pop()
      continue
    before, after = opcode.stack_before, opcode.stack_after
    operands: list[int] = []
    if pickletools.markobject in before:
      if not marks:
        raise PickleBoundError(f"malformed pickle: {name} without a MARK at byte {pos}")
      operands = stack[marks[-1] :]
      del stack[marks.pop() :]
      fence = marks[-1] if marks else 0
      below = before.index(pickletools.markobject)
    else:
      below = len(before)
    if len(stack) - below < fence:
      raise PickleBoundError(f"malformed pickle: stack underflow at {name}, byte {pos}")
    if below:
      operands = stack[-below:] + operands
      del stack[-below:]
    if name == "DUP":
      stack += operands * 2
    elif pickletools.markobject in after:
      marks.append(len(stack))
    elif name in _MUTATING:
      target = operands[0]
      if not isinstance(children[target], list):
        children[target] = list(children[target])
      children[target] += operands[1:]
      depth[target] = max([depth[target]] + [1 + depth[node] for node in operands[1:]])
      stack.append(target)
    elif after:
      stack.append(len(children))
      children.append(tuple(operands))
      depth.append(1 + max((depth[node] for node in operands), default=0))
    if stack and depth[stack[-1]] > MAX_DEPTH:
      raise _too_deep()
  return children


def _too_deep() -> PickleBoundError:
  return PickleBoundError(f"refusing a pickle whose objects nest more than {MAX_DEPTH} levels deep")


def _check_graph(children: list) -> None:
  """Expanded size and nesting depth of every object; PickleBoundError past a bound."""
  weight = [0] * len(children)  # Objects in the expanded tree, shared ones counted per use.
  depth = [0] * len(children)
  done = bytearray(len(children))  # 0: unseen, 1: being expanded, 2: measured.
  for root in range(len(children)):
    pending = [root]
    while pending:
      node = pending[-1]
      if done[node] == 2:
        pending.pop()
      elif done[node] == 0:
        done[node] = 1
        for child in children[node]:
          if done[child] == 1:
            raise PickleBoundError("refusing a pickle in which an object contains itself")
          if done[child] == 0:
            pending.append(child)
      else:
        pending.pop()
        done[node] = 2
        kids = children[node]
        weight[node] = 1 + sum(weight[child] for child in kids)
        depth[node] = 1 + max((depth[child] for child in kids), default=0)
        if weight[node] > MAX_OBJECTS:
          raise PickleBoundError(
            f"refusing a pickle in which an object expands to more than {MAX_OBJECTS} objects "
            "(a shared object counted at each use)"
          )
        if depth[node] > MAX_DEPTH:
          raise _too_deep()
