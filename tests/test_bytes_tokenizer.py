import numpy as np

from perceiver_jax.data import bytes_tokenizer as bt


def test_constants_are_the_released_vocabulary():
  assert (bt.PAD, bt.BOS, bt.EOS, bt.MASK, bt.CLS, bt.SEP, bt.OFFSET) == (0, 1, 2, 3, 4, 5, 6)
  assert bt.VOCAB_SIZE == 262


def test_ascii_round_trip_and_ids():
  ids = bt.encode("Hi!")
  assert ids.dtype == np.int32
  np.testing.assert_array_equal(ids, [ord("H") + 6, ord("i") + 6, ord("!") + 6])
  assert bt.decode(ids) == "Hi!"


def test_multi_byte_utf8_round_trip():
  text = "Grüße, 東京 🚀"
  ids = bt.encode(text)
  assert len(ids) == len(text.encode("utf-8")) == 20
  assert ids.min() >= bt.OFFSET and ids.max() < bt.VOCAB_SIZE
  assert bt.decode(ids) == text
  assert bt.decode(list(ids)) == text


def test_specials_are_dropped():
  ids = [bt.BOS, *bt.encode("a b"), bt.MASK, bt.SEP, *bt.encode("c"), bt.EOS, bt.PAD, bt.PAD]
  assert bt.decode(ids) == "a bc"


def test_invalid_bytes_decode_to_replacement_characters():
  cut = bt.encode("東")[:2]  # half of a 3-byte character
  assert bt.decode(cut) == "\ufffd"
  lone = np.array([0xFF + bt.OFFSET, ord("x") + bt.OFFSET, 0x80 + bt.OFFSET])
  assert bt.decode(lone) == "\ufffdx\ufffd"
  assert bt.decode([]) == ""
