"""Writes WordNet 3.0's glosses labelled with their synset's supersense, in GLUE's layout.

Every synset line of WordNet's `data.noun`, `data.verb`, `data.adj` and `data.adv` (Debian's
`wordnet-base`, /usr/share/wordnet) carries a lexicographer file number, the synset's
supersense (noun.animal, verb.motion, adj.all, ...: the 45 names of WordNet's `lexnames`), and
after `| ` its gloss: a definition, often followed by quoted example sentences. One example
per synset: the definition is the sentence, the supersense name the label. All 45
supersenses are kept (the smallest, noun.motive, has 42 synsets: a few land in dev and test).

The quoted examples are cut off unless --keep_examples: they show the word in use ("he
breathed deeply") rather than say what it means, and usually repeat the word itself, whose
form (-ing, -ly) gives away the part of speech; without them 99.8% of the definitions fit in
the 256 input bytes of the miniature model ([CLS] text [SEP]).

Split: by the MD5 of the synset id (part of speech + offset, e.g. "n00001740") modulo 10:
0-7 train, 8 dev, 9 test (80/10/10, the same on every machine).

  python experiments/wordnet_supersenses/prepare.py --out=/tmp/wordnet_supersenses

writes OUT/WN/train.tsv and dev.tsv (`sentence\\tlabel`), OUT/WN/test.tsv (`index\\tsentence\\t
label`: GLUE's test layout, with the labels kept for scoring), and OUT/WN/flags.txt, the
`configs/glue.py:task=custom` overrides of this set (use it with `--flagfile`); prints the
split sizes, the label distribution and the majority-class accuracy on dev.
"""

from __future__ import annotations

import collections
import hashlib
import os
import re
from collections.abc import Iterator

from absl import app
from absl import flags

DIRECTORY = "WN"
PARTS_OF_SPEECH = ("noun", "verb", "adj", "adv")
SPLITS = ("train", "dev", "test")
# WordNet's lexicographer files in number order (lexnames(5WN)); a `lexnames` file in the
# WordNet folder, when there is one, is read instead.
LEXNAMES = (
  "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact",
  "noun.attribute", "noun.body", "noun.cognition", "noun.communication", "noun.event",
  "noun.feeling", "noun.food", "noun.group", "noun.location", "noun.motive", "noun.object",
  "noun.person", "noun.phenomenon", "noun.plant", "noun.possession", "noun.process",
  "noun.quantity", "noun.relation", "noun.shape", "noun.state", "noun.substance", "noun.time",
  "verb.body", "verb.change", "verb.cognition", "verb.communication", "verb.competition",
  "verb.consumption", "verb.contact", "verb.creation", "verb.emotion", "verb.motion",
  "verb.perception", "verb.possession", "verb.social", "verb.stative", "verb.weather",
  "adj.ppl",
)  # fmt: skip
# The first quoted example: `; "` (or a gloss that starts with a quote).
_EXAMPLES = re.compile(r'(^|;)\s*"')


def read_lexnames(wordnet_dir: str) -> tuple[str, ...]:
  """The supersense names by lexicographer file number: `wordnet_dir/lexnames` (lines
  `NN name pos`) when it exists, else `LEXNAMES`."""
  path = os.path.join(wordnet_dir, "lexnames")
  if not os.path.isfile(path):
    return LEXNAMES
  names = {}
  with open(path, encoding="utf-8") as f:
    for line in f:
      fields = line.split()
      if len(fields) >= 2 and fields[0].isdigit():
        names[int(fields[0])] = fields[1]
  if sorted(names) != list(range(len(names))) or not names:
    raise ValueError(f"{path}: expected lines 'NN name pos' numbered 0..N-1")
  return tuple(names[i] for i in range(len(names)))


def definition(gloss: str, keep_examples: bool) -> str:
  """The gloss without its quoted examples (unless `keep_examples`), on one line, no tabs."""
  if not keep_examples:
    gloss = _EXAMPLES.split(gloss, maxsplit=1)[0]
  return " ".join(gloss.split()).rstrip(";").strip()


def read_synsets(
  path: str, pos: str, num_lexnames: int, keep_examples: bool, skipped: collections.Counter
) -> Iterator[tuple[str, int, str]]:
  """(synset id, lexicographer file number, sentence) of each synset line of a `data.POS`
  file. License lines (two leading spaces) are passed over; a line without `| `, with a bad
  file number or with an empty definition is counted in `skipped` by reason."""
  with open(path, encoding="utf-8", errors="replace") as f:
    for line in f:
      if line.startswith("  "):
        continue
      head, bar, gloss = line.partition(" | ")
      fields = head.split()
      if not bar or len(fields) < 2 or not fields[0].isdigit() or not fields[1].isdigit():
        skipped["malformed"] += 1
        continue
      number = int(fields[1])
      if number >= num_lexnames:
        skipped["unknown_lexname"] += 1
        continue
      sentence = definition(gloss, keep_examples)
      if not sentence:
        skipped["empty_definition"] += 1
        continue
      yield f"{pos[0]}{fields[0]}", number, sentence


def split_of(synset_id: str) -> str:
  """ "train", "dev" or "test": the MD5 of the id modulo 10 (0-7, 8, 9)."""
  bucket = int(hashlib.md5(synset_id.encode("ascii")).hexdigest(), 16) % 10
  return SPLITS[0] if bucket < 8 else SPLITS[bucket - 7]


def build(
  wordnet_dir: str, keep_examples: bool = False
) -> tuple[dict[str, list[tuple[str, str]]], tuple[str, ...], collections.Counter]:
  """({split: [(sentence, label name)] in file order}, the label names, skipped counts)."""
  lexnames = read_lexnames(wordnet_dir)
  splits = {name: [] for name in SPLITS}
  skipped = collections.Counter()
  for pos in PARTS_OF_SPEECH:
    path = os.path.join(wordnet_dir, f"data.{pos}")
    if not os.path.isfile(path):
      raise ValueError(f"--wordnet_dir={wordnet_dir!r}: no file data.{pos} (wordnet-base)")
    for synset_id, number, sentence in read_synsets(
      path, pos, len(lexnames), keep_examples, skipped
    ):
      splits[split_of(synset_id)].append((sentence, lexnames[number]))
  return splits, lexnames, skipped


def write_split(path: str, examples: list[tuple[str, str]], is_test: bool) -> None:
  """`sentence\\tlabel` lines, or `index\\tsentence\\tlabel` for the test split."""
  with open(path, "w", encoding="utf-8") as f:
    if is_test:
      f.write("index\tsentence\tlabel\n")
      f.writelines(f"{i}\t{s}\t{label}\n" for i, (s, label) in enumerate(examples))
    else:
      f.write("sentence\tlabel\n")
      f.writelines(f"{s}\t{label}\n" for s, label in examples)


def config_flags(out: str, labels: tuple[str, ...]) -> str:
  """The `configs/glue.py:task=custom` overrides of this set, one flag a line."""
  return (
    f"--config.data.data_dir={os.path.abspath(out)}\n"
    f"--config.data.custom.directory={DIRECTORY}\n"
    f"--config.data.custom.labels={labels!r}\n"
    f"--config.model.num_classes={len(labels)}\n"
  )


def main(argv):
  del argv
  splits, lexnames, skipped = build(_WORDNET_DIR.value, _KEEP_EXAMPLES.value)
  folder = os.path.join(_OUT.value, DIRECTORY)
  os.makedirs(folder, exist_ok=True)
  for name, examples in splits.items():
    write_split(os.path.join(folder, f"{name}.tsv"), examples, is_test=name == "test")
  flags_path = os.path.join(folder, "flags.txt")
  with open(flags_path, "w", encoding="utf-8") as f:
    f.write(config_flags(_OUT.value, lexnames))
  print(f"wrote {folder}/{{train,dev,test}}.tsv and {flags_path}; skipped: {dict(skipped)}")
  for name, examples in splits.items():
    lengths = sorted(len(s.encode("utf-8")) + 2 for s, _ in examples)  # + CLS and SEP
    over = sum(n > 256 for n in lengths)
    print(
      f"{name}: {len(examples)} examples, median {lengths[len(lengths) // 2]} bytes, "
      f"{over} over 256"
    )
  counts = {name: collections.Counter(label for _, label in ex) for name, ex in splits.items()}
  print(f"{'supersense':20s} {'train':>6s} {'dev':>5s} {'test':>5s}")
  for label in sorted(lexnames, key=lambda name: -counts["train"][name]):
    row = " ".join(f"{counts[s][label]:{6 if s == 'train' else 5}d}" for s in SPLITS)
    print(f"{label:20s} {row}")
  majority, majority_count = counts["train"].most_common(1)[0]
  for name in ("dev", "test"):
    accuracy = counts[name][majority] / len(splits[name])
    print(f"majority class ({majority}, {majority_count} train) accuracy on {name}: {accuracy:.4f}")
  train_sentences = {s for s, _ in splits["train"]}
  for name in ("dev", "test"):
    seen = sum(s in train_sentences for s, _ in splits[name])
    print(f"{name} sentences also in train: {seen}")


if __name__ == "__main__":
  # Flags exist only when this runs as a script, so that tests can import its functions
  # next to other modules that define flags of the same names.
  _WORDNET_DIR = flags.DEFINE_string("wordnet_dir", "/usr/share/wordnet", "WordNet's dict folder")
  _OUT = flags.DEFINE_string("out", None, "output directory", required=True)
  _KEEP_EXAMPLES = flags.DEFINE_bool("keep_examples", False, "keep the quoted example sentences")
  app.run(main)
