"""Fills in hidden bytes of a sentence with a byte-level masked language model.

  python -m perceiver_jax.fill_mask --config=configs/mlm.py \
      --checkpoint=language_perceiver_io_bytes.pickle \
      --text="This is an incomplete sentence where some words are missing." \
      --mask=" missing." [--top_k=3]

`--mask` names the substring whose bytes are hidden (its first occurrence), or
`--mask_span=START:END` gives the byte range. The hidden bytes become MASK ids, the sentence
is padded with PAD to the model's input length, and the model's most likely byte at each hidden
position is printed in place. `--top_k=K` also lists the K most likely bytes per position. A
bad text, mask or checkpoint ends with one `error:` line.
"""

from __future__ import annotations

import numpy as np

from perceiver_jax.data import bytes_tokenizer


def mask_span(text: str, mask: str | None = None, span: str | None = None) -> tuple[int, int]:
  """The byte range [start, end) of `text` to hide: the first occurrence of `mask`, or the
  `START:END` byte range `span`. Raises ValueError naming the problem in one line."""
  data = text.encode("utf-8")
  if (mask is None) == (span is None):
    raise ValueError("give exactly one of --mask and --mask_span")
  if mask is not None:
    start = data.find(mask.encode("utf-8")) if mask else -1
    if start < 0:
      raise ValueError(f"--mask={mask!r} is not a non-empty substring of --text")
    return start, start + len(mask.encode("utf-8"))
  try:
    start, end = (int(part) for part in span.split(":"))
  except ValueError:
    raise ValueError(f"--mask_span={span!r}: expected START:END byte offsets") from None
  if not 0 <= start < end <= len(data):
    raise ValueError(f"--mask_span={span!r}: not a non-empty range of the {len(data)} bytes")
  return start, end


def masked_ids(text: str, start: int, end: int, length: int) -> np.ndarray:
  """Byte ids of `text` with bytes [start, end) set to MASK, PAD-padded: int32 [length]."""
  ids = bytes_tokenizer.encode(text)
  if len(ids) > length:
    raise ValueError(f"the text is {len(ids)} bytes long; the model reads at most {length} bytes")
  ids[start:end] = bytes_tokenizer.MASK
  return np.pad(ids, (0, length - len(ids)), constant_values=bytes_tokenizer.PAD)


def fill_mask(
  forward, params, state, text: str, start: int, end: int, top_k: int = 0
) -> tuple[str, list[list[tuple[str, float]]]]:
  """Predicts bytes [start, end) of `text` with a text model (`model.build_model`).

  Returns the text with those bytes replaced by the argmax bytes (decoded with replacement
  characters where they do not form UTF-8), and per hidden position its `top_k` most likely
  (byte as text, probability) pairs, most likely first.
  """
  length = params["trainable_position_encoding"]["pos_embs"].shape[0]  # the input length L
  ids = masked_ids(text, start, end, length)
  logits, _ = forward.apply(params, state, None, ids[None], is_training=False)  # [1, L, V]
  logits = np.asarray(logits[0, start:end], np.float64)  # [end - start, V]
  # Only byte ids are candidates: the model never has to fill in a special token.
  logits[:, : bytes_tokenizer.OFFSET] = -np.inf
  data = bytearray(text.encode("utf-8"))
  best = np.argmax(logits, axis=-1) - bytes_tokenizer.OFFSET  # [end - start] byte values
  data[start:end] = best.astype(np.uint8).tobytes()
  filled = bytes(data).decode("utf-8", errors="replace")
  probs = np.exp(logits - logits.max(axis=-1, keepdims=True))
  probs /= probs.sum(axis=-1, keepdims=True)
  alternatives = [
    [(bytes_tokenizer.decode([i]), float(row[i])) for i in np.argsort(-row, kind="stable")[:top_k]]
    for row in probs
  ]
  return filled, alternatives
