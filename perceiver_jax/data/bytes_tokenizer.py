"""UTF-8 bytes as token ids: the vocabulary of the Perceiver IO language model.

Each byte b of the UTF-8 encoding becomes the id b + OFFSET; the ids below OFFSET are special
tokens. The released language model uses exactly this layout (262 ids: 6 specials, 256 bytes),
so no vocabulary file is needed and any text, in any script, encodes without unknown tokens.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

PAD = 0
BOS = 1
EOS = 2
MASK = 3
CLS = 4
SEP = 5
OFFSET = 6
VOCAB_SIZE = 256 + OFFSET  # 262


def encode(text: str) -> np.ndarray:
  """The byte ids of `text`: int32 [num_bytes], byte b -> b + OFFSET, no special tokens added."""
  data = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
  return data.astype(np.int32) + OFFSET


def decode(ids: Iterable[int] | np.ndarray) -> str:
  """The text of byte ids [num_ids]; special ids (< OFFSET) are dropped.

  Ids that do not form valid UTF-8 (e.g. a multi-byte character cut in half, or a byte the
  model predicted out of context) become U+FFFD replacement characters; this never raises.
  Ids outside [0, VOCAB_SIZE) are dropped like specials.
  """
  ids = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids, dtype=np.int64)
  ids = ids.reshape(-1)
  byte_ids = ids[(ids >= OFFSET) & (ids < VOCAB_SIZE)] - OFFSET
  return byte_ids.astype(np.uint8).tobytes().decode("utf-8", errors="replace")
