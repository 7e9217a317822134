"""Writes the miniature MLM experiment's text: English prose that ships with CPython.

Two sources, both in every CPython installation (no network):
- `pydoc_data/topics.py`: the Python Language Reference's topics, {name: text};
- the docstrings of the standard library's own modules (`Lib/**/*.py`, without the `test`,
  `idlelib` and `site-packages` trees): module, class and function docstrings, read with
  `ast` (nothing is imported or run).

Each text is cut into paragraphs at blank lines. Paragraphs with an indented line (code,
grammar rules, doctest examples, tables) are dropped. Heading underlines (a line of only `*`,
`=`, `-`, `~` or `^`) are dropped, and so are paragraphs under 40 bytes. The rest become one
document per line (inner newlines -> spaces). Every 6th topic in sorted name order (starting
with the 4th) is held out for evaluation; every docstring goes to training.

  python experiments/mlm_bytes/prepare_text.py --out=/tmp/mlm_bytes_data

writes OUT/train/topics.txt, OUT/train/docstrings.txt and OUT/eval/topics.txt and prints
their sizes and the held-out topics.
"""

from __future__ import annotations

import ast
import os
import pathlib
import re
import sys
import sysconfig

from absl import app
from absl import flags

HELD_OUT_START = 3
HELD_OUT_EVERY = 6
MIN_BYTES = 40
SKIPPED_TREES = frozenset({"test", "tests", "idlelib", "site-packages", "lib2to3"})
_UNDERLINE = re.compile(r"^\s*([*=~^-])\1{2,}\s*$")


def prose_paragraphs(text: str) -> list[str]:
  """The prose paragraphs of one text, each joined into one line."""
  kept = []
  for para in text.split("\n\n"):
    lines = [line for line in para.split("\n") if line.strip() and not _UNDERLINE.match(line)]
    if not lines or any(line.startswith((" ", "\t")) for line in lines):
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


def module_docstrings(source: str) -> list[str]:
  """The docstrings of a module's source, in order: the module's, its classes' and functions'.

  Source that does not parse gives none.
  """
  try:
    tree = ast.parse(source)
  except (SyntaxError, ValueError):
    return []
  kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
  return [
    doc for node in ast.walk(tree) if isinstance(node, kinds) and (doc := ast.get_docstring(node))
  ]


def stdlib_files(stdlib: pathlib.Path) -> list[pathlib.Path]:
  """The standard library's .py files in sorted order, outside SKIPPED_TREES."""
  files = []
  for path in sorted(stdlib.rglob("*.py")):
    if not SKIPPED_TREES.intersection(path.relative_to(stdlib).parts):
      files.append(path)
  return files


def _write(path: str, paras: list[str]) -> int:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    f.write("\n".join(paras) + "\n")
  return sum(len(p.encode("utf-8")) for p in paras)


def main(argv):
  del argv
  from pydoc_data import topics as pydoc_topics

  train, held = split_topics(pydoc_topics.topics)
  for split, names in (("train", train), ("eval", held)):
    paras = [p for name in names for p in prose_paragraphs(pydoc_topics.topics[name])]
    path = os.path.join(_OUT.value, split, "topics.txt")
    size = _write(path, paras)
    print(f"{split}: {len(names)} topics, {len(paras)} paragraphs, {size} bytes -> {path}")

  stdlib = pathlib.Path(sysconfig.get_paths()["stdlib"])
  files = stdlib_files(stdlib)
  paras = []
  for path in files:
    source = path.read_text(encoding="utf-8", errors="replace")
    for doc in module_docstrings(source):
      paras.extend(prose_paragraphs(doc))
  out = os.path.join(_OUT.value, "train", "docstrings.txt")
  size = _write(out, paras)
  print(
    f"train: docstrings of {len(files)} modules, {len(paras)} paragraphs, {size} bytes -> {out}"
  )
  print(f"python {sys.version.split()[0]}, {pydoc_topics.__file__}, {stdlib}")
  print("held-out topics:", ", ".join(held))


if __name__ == "__main__":
  # Flags exist only when this runs as a script, so that tests can import its functions
  # next to other modules that define flags of the same names.
  _OUT = flags.DEFINE_string("out", None, "output directory", required=True)
  app.run(main)
