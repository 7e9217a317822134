"""Masking of byte sequences for masked language modelling (BERT's recipe on bytes).

The unit of masking is a word (the paper's whole-word masking) or a single byte:
- `unit="word"`: a word is a maximal run of byte ids that are neither whitespace bytes nor
  special ids (PAD, SEP, ...). round(mask_rate * num_words) words are chosen (at least one
  when there is a word) and every byte of each is predicted.
- `unit="byte"`: round(mask_rate * num_bytes) of the sequence's byte ids (ids of real bytes,
  whitespace included, never PAD/SEP/...) are chosen, at least one when there is a byte.
Each chosen byte independently becomes MASK with probability `mask_token_fraction`, a
uniformly random byte with `random_byte_fraction`, and is left unchanged otherwise
(BERT: 80% / 10% / 10%, decided per token).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from perceiver_jax.data import bytes_tokenizer as bt

# The ASCII whitespace bytes (space, \t, \n, \v, \f, \r) as ids: they separate words.
_SPACE_IDS = np.array([ord(c) + bt.OFFSET for c in " \t\n\v\f\r"], np.int32)
UNITS = ("word", "byte")


@dataclasses.dataclass(frozen=True)
class MaskingConfig:
  """The masking of `config.data` (mask_rate, mask_token_fraction, random_byte_fraction,
  mask_unit), validated."""

  mask_rate: float = 0.15
  mask_token_fraction: float = 0.8
  random_byte_fraction: float = 0.1
  unit: str = "word"

  def __post_init__(self):
    if self.unit not in UNITS:
      raise ValueError(f"config.data.mask_unit={self.unit!r}: must be one of {UNITS}")
    for field in ("mask_rate", "mask_token_fraction", "random_byte_fraction"):
      value = getattr(self, field)
      if not 0.0 <= value <= 1.0:
        raise ValueError(f"config.data.{field}={value!r}: must be in [0, 1]")
    if self.mask_token_fraction + self.random_byte_fraction > 1.0:
      raise ValueError(
        f"config.data.mask_token_fraction={self.mask_token_fraction!r} plus "
        f"config.data.random_byte_fraction={self.random_byte_fraction!r} exceeds 1"
      )


def word_spans(ids: np.ndarray) -> np.ndarray:
  """int64 [num_words, 2]: the [start, end) positions of the words of `ids` [L]."""
  ids = np.asarray(ids)
  in_word = (ids >= bt.OFFSET) & ~np.isin(ids, _SPACE_IDS)
  edges = np.diff(np.concatenate([[0], in_word.astype(np.int8), [0]]))
  return np.stack([np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)], axis=-1)


def byte_spans(ids: np.ndarray) -> np.ndarray:
  """int64 [num_bytes, 2]: one [p, p + 1) span per real byte of `ids` [L] (never a special id)."""
  positions = np.flatnonzero(np.asarray(ids) >= bt.OFFSET)
  return np.stack([positions, positions + 1], axis=-1)


def mask_sequence(
  ids: np.ndarray, rng: np.random.Generator, cfg: MaskingConfig
) -> tuple[np.ndarray, np.ndarray]:
  """Masking of one sequence, by words or by bytes (`cfg.unit`).

  Args:
    ids: int32 [L] byte ids (PAD-padded).
    rng: the example's random generator (all draws come from it).
    cfg: the masking rates.
  Returns:
    (inputs int32 [L]: ids with the chosen bytes replaced, weights float32 [L]: 1 at the bytes
    to predict, else 0).
  """
  ids = np.asarray(ids, np.int32)
  spans = word_spans(ids) if cfg.unit == "word" else byte_spans(ids)
  weights = np.zeros(ids.shape, np.float32)
  if len(spans):
    num_chosen = max(1, int(round(cfg.mask_rate * len(spans)))) if cfg.mask_rate > 0 else 0
    for start, end in spans[rng.choice(len(spans), num_chosen, replace=False)]:
      weights[start:end] = 1.0
  chosen = weights > 0
  draw = rng.random(ids.shape)
  to_mask = chosen & (draw < cfg.mask_token_fraction)
  to_random = chosen & ~to_mask & (draw < cfg.mask_token_fraction + cfg.random_byte_fraction)
  inputs = ids.copy()
  inputs[to_mask] = bt.MASK
  random_bytes = rng.integers(bt.OFFSET, bt.VOCAB_SIZE, size=ids.shape, dtype=np.int32)
  inputs[to_random] = random_bytes[to_random]
  return inputs, weights
