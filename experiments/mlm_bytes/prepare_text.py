"""Writes the miniature MLM experiment's text: English prose from CPython's `pydoc_data.topics`.

`pydoc_data/topics.py` ships with every CPython (no network): the Python Language Reference's
topics, {name: text}. Each topic is cut into paragraphs at blank lines; paragraphs with an
indented line (code, grammar rules, tables) and paragraphs under 40 bytes (headings) are
dropped, the rest become one document per line (inner newlines -> spaces). Every 6th topic in
sorted name order (starting with the 4th) is held out for evaluation:

  python experiments/mlm_bytes/prepare_text.py --out=/tmp/mlm_bytes_data

writes OUT/train/topics.txt and OUT/eval/topics.txt and prints their sizes and held-out topics.
"""

from __future__ import annotations

import os
import sys

from absl import app
from absl import flags

_OUT = flags.DEFINE_string("out", None, "output directory", required=True)

HELD_OUT_START = 3
HELD_OUT_EVERY = 6
MIN_BYTES = 40


def prose_paragraphs(text: str) -> list[str]:
  """The prose paragraphs of one topic, each joined into one line."""
  kept = []
  for para in text.split("\n\n"):
    lines = [line for line in para.split("\n") if line.strip()]
    if not lines or any(line.startswith(" ") for line in lines):
      continue
    joined = " ".join(line.strip() for line in lines)
    if len(joined.encode("utf-8")) >= MIN_BYTES:
      kept.append(joined)
  return kept


def split_topics(topics: dict[str, str]) -> tuple[list[str], list[str]]:
  """(training topic names, held-out topic names), sorted."""
  names = sorted(topics)
  held = names[HELD_OUT_START::HELD_OUT_EVERY]
  return [n for n in names if n not in held], held


def main(argv):
  del argv
  from pydoc_data import topics as pydoc_topics

  train, held = split_topics(pydoc_topics.topics)
  for split, names in (("train", train), ("eval", held)):
    paras = [p for name in names for p in prose_paragraphs(pydoc_topics.topics[name])]
    os.makedirs(os.path.join(_OUT.value, split), exist_ok=True)
    path = os.path.join(_OUT.value, split, "topics.txt")
    with open(path, "w", encoding="utf-8") as f:
      f.write("\n".join(paras) + "\n")
    size = sum(len(p.encode("utf-8")) for p in paras)
    print(f"{split}: {len(names)} topics, {len(paras)} paragraphs, {size} bytes -> {path}")
  print(f"python {sys.version.split()[0]}, {pydoc_topics.__file__}")
  print("held-out topics:", ", ".join(held))


if __name__ == "__main__":
  app.run(main)
