"""Bag-of-bytes baselines for the WordNet supersense set (see prepare.py).

Multinomial logistic regression, trained full batch with L-BFGS (optax) to convergence, on
  bytes    the 256 byte counts of the sentence divided by its length in bytes;
  bigrams  the same plus the counts of the `--bigrams` byte pairs found in most training
           sentences, divided by the number of pairs in the sentence (a second, separate
           baseline).
Features are standardised with the training split's mean and deviation; the L2 weight (on
the weights, not the biases) is chosen from `L2_GRID` by dev accuracy, and the test accuracy
is reported at that choice.

  python experiments/wordnet_supersenses/bag_of_bytes.py --data=/tmp/wordnet_supersenses/WN

prints each point of the grid and writes --results (JSON: per baseline the chosen L2 and its
dev and test accuracy, and the whole grid).
"""

from __future__ import annotations

import collections
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app
from absl import flags

L2_GRID = (1e-5, 1e-4, 1e-3, 1e-2)


def read_tsv(path: str) -> tuple[list[str], list[str]]:
  """(sentences, labels) of a file with `sentence` and `label` columns (any order, a header)."""
  with open(path, encoding="utf-8") as f:
    header = f.readline().rstrip("\n").split("\t")
    if "sentence" not in header or "label" not in header:
      raise ValueError(f"{path}: header {header} lacks 'sentence' or 'label'")
    s, y = header.index("sentence"), header.index("label")
    rows = [line.rstrip("\n").split("\t") for line in f if line.strip()]
  return [r[s] for r in rows], [r[y] for r in rows]


def byte_features(sentences: list[str]) -> np.ndarray:
  """float32 [N, 256]: each sentence's byte counts over its length in bytes."""
  out = np.zeros((len(sentences), 256), np.float32)
  for i, sentence in enumerate(sentences):
    data = np.frombuffer(sentence.encode("utf-8"), np.uint8)
    out[i] = np.bincount(data, minlength=256) / max(len(data), 1)
  return out


def pair_codes(sentence: str) -> np.ndarray:
  """int64 [n - 1]: the sentence's byte pairs as first * 256 + second."""
  data = np.frombuffer(sentence.encode("utf-8"), np.uint8).astype(np.int64)
  return data[:-1] * 256 + data[1:]


def top_pairs(sentences: list[str], count: int) -> np.ndarray:
  """int64 [count]: the byte pairs found in most sentences (ties: lower code first)."""
  frequency = np.zeros(256 * 256, np.int64)
  for sentence in sentences:
    frequency[np.unique(pair_codes(sentence))] += 1
  return np.argsort(-frequency, kind="stable")[:count]


def pair_features(sentences: list[str], pairs: np.ndarray) -> np.ndarray:
  """float32 [N, len(pairs)]: counts of `pairs` over the number of pairs in each sentence."""
  column = np.full(256 * 256, -1, np.int64)
  column[pairs] = np.arange(len(pairs))
  out = np.zeros((len(sentences), len(pairs)), np.float32)
  for i, sentence in enumerate(sentences):
    codes = pair_codes(sentence)
    kept = column[codes]
    out[i] = np.bincount(kept[kept >= 0], minlength=len(pairs)) / max(len(codes), 1)
  return out


def standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
  """Every array minus the train mean over the train deviation (constant columns: 1)."""
  mean, std = train.mean(0), train.std(0)
  std = np.where(std > 0, std, 1.0)
  return [(x - mean) / std for x in (train, *others)]


_SOLVER = optax.lbfgs()


@jax.jit
def _step(params: dict, state: optax.OptState, x: jax.Array, y: jax.Array, l2: jax.Array):
  """One L-BFGS step on the objective of `fit` (data and l2 as arguments: one compilation)."""

  def objective(params):
    logits = x @ params["w"] + params["b"]  # [N, K]
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return loss + 0.5 * l2 * jnp.sum(params["w"] ** 2)

  value, grad = optax.value_and_grad_from_state(objective)(params, state=state)
  updates, state = _SOLVER.update(grad, state, params, value=value, grad=grad, value_fn=objective)
  return optax.apply_updates(params, updates), state, optax.tree.norm(grad)


def fit(x: np.ndarray, y: np.ndarray, num_classes: int, l2: float, max_steps: int) -> dict:
  """Multinomial logistic regression on x [N, F], y int [N]: minimises the mean
  cross-entropy + l2 / 2 * |w|^2 with L-BFGS (until the gradient's norm is under 1e-5, or
  `max_steps`); returns {"w": [F, K], "b": [K]}."""
  params = {"w": jnp.zeros((x.shape[1], num_classes)), "b": jnp.zeros(num_classes)}
  state = _SOLVER.init(params)
  x, y, l2 = jnp.asarray(x), jnp.asarray(y), jnp.float32(l2)
  for _ in range(max_steps):
    params, state, grad_norm = _step(params, state, x, y, l2)
    if grad_norm < 1e-5:
      break
  return params


def accuracy(params: dict, x: np.ndarray, y: np.ndarray) -> float:
  """Fraction of rows of x [N, F] whose argmax class is y [N]."""
  predictions = np.argmax(np.asarray(x @ params["w"] + params["b"]), axis=-1)
  return float(np.mean(predictions == y))


def run_baseline(features: dict[str, np.ndarray], labels: dict[str, np.ndarray], max_steps: int):
  """{"l2", "dev_accuracy", "test_accuracy", "grid": {l2: dev accuracy}} over `L2_GRID`."""
  train, dev, test = standardise(features["train"], features["dev"], features["test"])
  num_classes = int(labels["train"].max()) + 1
  grid, best = {}, None
  for l2 in L2_GRID:
    start = time.time()
    params = fit(train, labels["train"], num_classes, l2, max_steps)
    grid[l2] = accuracy(params, dev, labels["dev"])
    print(f"  l2={l2:g}: dev accuracy {grid[l2]:.4f} ({time.time() - start:.0f} s)", flush=True)
    if best is None or grid[l2] > grid[best[0]]:
      best = (l2, params)
  l2, params = best
  return {
    "l2": l2,
    "dev_accuracy": grid[l2],
    "test_accuracy": accuracy(params, test, labels["test"]),
    "train_accuracy": accuracy(params, train, labels["train"]),
    "grid": {f"{k:g}": v for k, v in grid.items()},
  }


def main(argv):
  del argv
  texts, names = {}, {}
  for split in ("train", "dev", "test"):
    texts[split], names[split] = read_tsv(os.path.join(_DATA.value, f"{split}.tsv"))
  classes = sorted(set(names["train"]))
  unseen = collections.Counter(n for s in ("dev", "test") for n in names[s] if n not in classes)
  if unseen:
    raise ValueError(f"labels of dev/test not in train: {dict(unseen)}")
  labels = {s: np.array([classes.index(n) for n in names[s]]) for s in names}
  majority = collections.Counter(labels["train"]).most_common(1)[0][0]
  results = {
    "data": os.path.abspath(_DATA.value),
    "sizes": {s: len(texts[s]) for s in texts},
    "classes": len(classes),
    "majority_class": {s: float(np.mean(labels[s] == majority)) for s in ("dev", "test")},
  }
  unigrams = {s: byte_features(texts[s]) for s in texts}
  print("bytes (256 features)", flush=True)
  results["bytes"] = run_baseline(unigrams, labels, _MAX_STEPS.value)
  if _BIGRAMS.value:
    pairs = top_pairs(texts["train"], _BIGRAMS.value)
    both = {s: np.concatenate([unigrams[s], pair_features(texts[s], pairs)], 1) for s in texts}
    print(f"bytes + {len(pairs)} byte pairs", flush=True)
    results["bigrams"] = run_baseline(both, labels, _MAX_STEPS.value)
    results["bigrams"]["pairs"] = len(pairs)
  for name in ("bytes", "bigrams"):
    if name in results:
      r = results[name]
      print(f"{name}: l2={r['l2']:g} dev {r['dev_accuracy']:.4f} test {r['test_accuracy']:.4f}")
  print(f"majority class: {results['majority_class']}")
  with open(_RESULTS.value, "w", encoding="utf-8") as f:
    json.dump(results, f, indent=2)
  print(f"wrote {_RESULTS.value}")


if __name__ == "__main__":
  # Flags exist only when this runs as a script, so that tests can import its functions
  # next to other modules that define flags of the same names.
  _DATA = flags.DEFINE_string("data", None, "folder of train/dev/test.tsv", required=True)
  _RESULTS = flags.DEFINE_string(
    "results",
    os.path.join(os.path.dirname(__file__), "baseline_results.json"),
    "where to write the results (JSON)",
  )
  _BIGRAMS = flags.DEFINE_integer("bigrams", 512, "byte pairs of the bigram baseline (0: none)")
  _MAX_STEPS = flags.DEFINE_integer("max_steps", 300, "L-BFGS steps per fit at most")
  app.run(main)
