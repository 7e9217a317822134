"""Kinetics-700-2020 class names.

Class index i is line i of `kinetics700_classes.txt`: the 700 names in the order of the
released Perceiver IO video autoencoding model's label outputs (the `KINETICS_CLASSES` list of
the official video autoencoding colab), which is the alphabetical order of the names
("abseiling" is 0, "zumba" is 699). The names are spelled as in the dataset's annotation CSVs.
"""

from __future__ import annotations

import collections
import functools
import importlib.resources

NUM_CLASSES = 700
_FILENAME = "kinetics700_classes.txt"  # One class name per line.


def parse_class_names(text: str, source: str) -> list[str]:
  """One name per line (blank lines ignored) -> the names; ValueError if one repeats."""
  names = [line.strip() for line in text.splitlines() if line.strip()]
  repeated = sorted(name for name, count in collections.Counter(names).items() if count > 1)
  if not names or repeated:
    raise ValueError(f"{source}: expected distinct class names, one per line; repeated {repeated}")
  return names


@functools.cache
def _packaged() -> tuple[str, ...]:
  resource = importlib.resources.files(__package__).joinpath(_FILENAME)
  names = parse_class_names(resource.read_text(encoding="utf-8"), _FILENAME)
  if len(names) != NUM_CLASSES:
    raise ValueError(f"{_FILENAME} must have {NUM_CLASSES} class names, found {len(names)}")
  return tuple(names)


def load_class_names(path: str | None = None) -> list[str]:
  """The 700 Kinetics-700-2020 class names in class-index order, or those of the file `path`
  (one name per line, e.g. a subset for tests)."""
  if path is None:
    return list(_packaged())
  with open(path, encoding="utf-8") as f:
    return parse_class_names(f.read(), path)
