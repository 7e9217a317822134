"""Writes pickle streams opcode by opcode, for files no pickler would write: forged dtypes,
states set on globals, bombs. Each function returns the opcodes that push one object on the
unpickler's stack; `dumps` pickles ordinary objects around `Raw` pieces of such opcodes."""

import io
import pickle
import struct

NONE, FALSE, TRUE = pickle.NONE, pickle.NEWFALSE, pickle.NEWTRUE


def global_(module: str, name: str) -> bytes:
  return pickle.GLOBAL + f"{module}\n{name}\n".encode()


def text(value: str) -> bytes:
  data = value.encode()
  return pickle.BINUNICODE + struct.pack("<I", len(data)) + data


def integer(value: int) -> bytes:
  return pickle.BININT + struct.pack("<i", value)


def raw_bytes(data: bytes) -> bytes:
  return pickle.BINBYTES + struct.pack("<I", len(data)) + data


def tuple_(*items: bytes) -> bytes:
  return pickle.MARK + b"".join(items) + pickle.TUPLE


def mapping(items: dict[str, bytes]) -> bytes:
  pairs = b"".join(text(key) + value for key, value in items.items())
  return pickle.EMPTY_DICT + pickle.MARK + pairs + pickle.SETITEMS


def call(fn: bytes, *args: bytes) -> bytes:
  return fn + tuple_(*args) + pickle.REDUCE


def build(obj: bytes, state: bytes) -> bytes:
  return obj + state + pickle.BUILD


def dtype(code, order="<", names=NONE, fields=NONE, elsize=-1, alignment=-1, flags=0) -> bytes:
  """`numpy.dtype(code, False, True)` with the state tuple numpy's `__reduce__` writes."""
  state = tuple_(
    integer(3),
    text(order),
    NONE,
    names,
    fields,
    integer(elsize),
    integer(alignment),
    integer(flags),
  )
  return build(call(global_("numpy", "dtype"), text(code), FALSE, TRUE), state)


def hidden_object_dtype() -> bytes:
  """A structured dtype whose one field is an object, with flags 0 claiming it holds none."""
  fields = mapping({"a": tuple_(dtype("O8", order="|"), integer(0))})
  return dtype("V8", "|", tuple_(text("a")), fields, elsize=8, alignment=1, flags=0)


def empty_array() -> bytes:
  """numpy's `_reconstruct(ndarray, (0,), b'b')`, the array BUILD then fills."""
  return call(
    global_("numpy.core.multiarray", "_reconstruct"),
    global_("numpy", "ndarray"),
    tuple_(integer(0)),
    raw_bytes(b"b"),
  )


def array_state(shape, dtype_ops: bytes, data: bytes) -> bytes:
  return tuple_(integer(1), tuple_(*map(integer, shape)), dtype_ops, FALSE, raw_bytes(data))


def array(shape, dtype_ops: bytes, data: bytes) -> bytes:
  """An ndarray as numpy pickles one: `_reconstruct`, then BUILD with its state."""
  return build(empty_array(), array_state(shape, dtype_ops, data))


def stream(obj: bytes) -> bytes:
  return pickle.PROTO + b"\x02" + obj + pickle.STOP


class Raw:
  """Stands for one object in `dumps`: its opcodes are written as they are."""

  def __init__(self, ops: bytes):
    self.ops = ops


class _Pickler(pickle._Pickler):  # The Python pickler, whose `save` can be extended.
  def save(self, obj, save_persistent_id=True):
    if isinstance(obj, Raw):
      self.write(obj.ops)
    else:
      super().save(obj, save_persistent_id)


def dumps(content) -> bytes:
  """`pickle.dumps(content, protocol=2)`, with each `Raw` in it written as its opcodes."""
  out = io.BytesIO()
  _Pickler(out, protocol=2).dump(content)
  return out.getvalue()
