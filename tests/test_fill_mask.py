"""`python -m perceiver_jax.fill_mask` on the tiny byte model with a checkpoint saved here."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from perceiver_jax import model
from perceiver_jax import official_format
from perceiver_jax import registry
from perceiver_jax.data import bytes_tokenizer
from perceiver_jax.tools import fill_mask

REPO = os.path.join(os.path.dirname(__file__), "..")
CONFIG = "configs/mlm.py:runlocal"
TEXT = "Some words are missing."


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  cfg = registry.get_model_config("mlm_testing")
  forward = model.build_model(cfg)
  params, state = forward.init(jax.random.PRNGKey(7), model.dummy_inputs(cfg), is_training=True)
  path = str(tmp_path_factory.mktemp("ckpt") / "mlm.pickle")
  official_format.save_official_pickle(path, params, bare=True)
  return path, forward, params, state


def _run(*args):
  return subprocess.run(
    [sys.executable, "-m", "perceiver_jax.fill_mask", f"--config={CONFIG}", *args],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
  )


def test_mask_span_from_substring_or_range():
  assert fill_mask.mask_span("Grüße!", mask="ü") == (2, 4)
  assert fill_mask.mask_span("abcdef", span="1:3") == (1, 3)
  with pytest.raises(ValueError, match="not a non-empty substring"):
    fill_mask.mask_span("abc", mask="x")
  with pytest.raises(ValueError, match="not a non-empty range of the 3 bytes"):
    fill_mask.mask_span("abc", span="2:9")
  with pytest.raises(ValueError, match="exactly one"):
    fill_mask.mask_span("abc", mask="a", span="0:1")


def test_masked_ids_and_length_error():
  ids = fill_mask.masked_ids("abcd", 1, 3, 6)
  np.testing.assert_array_equal(ids, [ord("a") + 6, 3, 3, ord("d") + 6, 0, 0])
  with pytest.raises(ValueError, match="5 bytes long; the model reads at most 4 bytes"):
    fill_mask.masked_ids("abcde", 0, 1, 4)


def test_fills_exactly_the_masked_bytes_with_the_argmax(checkpoint):
  path, forward, params, state = checkpoint
  start, end = fill_mask.mask_span(TEXT, mask=" missing")
  result = _run(f"--checkpoint={path}", f"--text={TEXT}", "--mask= missing", "--top_k=2")
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  ids = fill_mask.masked_ids(TEXT, start, end, 64)
  logits, _ = forward.apply(params, state, None, ids[None], is_training=False)
  best = np.argmax(np.asarray(logits[0, start:end, bytes_tokenizer.OFFSET :]), axis=-1)
  expected = TEXT.encode()[:start] + bytes(best.astype(np.uint8)) + TEXT.encode()[end:]
  assert lines[0] == expected.decode("utf-8", errors="replace")
  assert len(lines) == 1 + (end - start)
  assert all(line.startswith(f"byte {start + i}: ") for i, line in enumerate(lines[1:]))
  assert all(line.count(", ") >= 1 for line in lines[1:])  # two alternatives each


def test_clear_errors(checkpoint):
  path = checkpoint[0]
  long = _run(f"--checkpoint={path}", f"--text={'x' * 70}", "--mask=x")
  assert long.returncode == 1
  assert "error: the text is 70 bytes long; the model reads at most 64 bytes" in long.stderr
  missing = _run(f"--checkpoint={path}", f"--text={TEXT}", "--mask=absent")
  assert missing.returncode == 1 and "--mask='absent' is not" in missing.stderr
