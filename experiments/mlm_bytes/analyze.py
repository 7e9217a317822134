"""Results of the miniature MLM run: unigram baselines, the learning curve, a params pickle.

  python experiments/mlm_bytes/analyze.py --workdir=/tmp/mlm_final \
      --data_dir=/tmp/mlm_bytes_data [--results_dir=experiments/mlm_bytes]

The baselines are measured on exactly the bytes the trainer's evaluation predicts: the
held-out examples of `text.make_data` under `configs/mlm.py:mini` (same crops, same masking).
A unigram model is fitted on the prediction targets of the first `--fit_steps` training
batches, and for comparison on every byte of the training text. Each gives: the accuracy of
always guessing its most likely byte, the expected accuracy of guessing at random by its
probabilities, and its cross-entropy in nats (comparable with `eval/loss`). A stronger,
context baseline (`neighbour_predictions`): the byte seen most often in the training text
between the same two visible neighbours, backing off to one neighbour, then to the unigram.

Writes RESULTS_DIR/results.json, RESULTS_DIR/learning_curve.png and WORKDIR/mini_bytes.pickle
(the newest checkpoint's params in the released bare layout, for `perceiver_jax.fill_mask`).
"""

from __future__ import annotations

import json
import os

import jax
import matplotlib
import numpy as np
from absl import app
from absl import flags

matplotlib.use("Agg")
from matplotlib import pyplot as plt  # noqa: E402

from configs import mlm  # noqa: E402
from perceiver_jax import official_format  # noqa: E402
from perceiver_jax import pretrained  # noqa: E402
from perceiver_jax.data import bytes_tokenizer as bt  # noqa: E402
from perceiver_jax.data import contract  # noqa: E402
from perceiver_jax.data import text  # noqa: E402


def unigram_scores(train_counts: np.ndarray, eval_ids: np.ndarray) -> dict[str, float]:
  """A unigram model (counts [V], add-one smoothed) scored on target ids [N].

  Returns `argmax_accuracy` (always its most frequent id), `sampled_accuracy` (the expected
  accuracy of guessing id v with its probability p(v)) and `loss` (mean -log p(id), nats).
  """
  probs = (train_counts + 1.0) / (train_counts.sum() + len(train_counts))
  return {
    "argmax_accuracy": float(np.mean(eval_ids == np.argmax(train_counts))),
    "sampled_accuracy": float(np.mean(probs[eval_ids])),
    "loss": float(np.mean(-np.log(probs[eval_ids]))),
    "argmax_byte": bt.decode([int(np.argmax(train_counts))]),
  }


def neighbour_tables(ids: np.ndarray) -> dict[str, np.ndarray]:
  """Byte counts of a text's ids [N] by context: both neighbours [V, V, V] (left, right, byte),
  the left one [V, V], the right one [V, V], none (every byte) [V] (int64)."""
  v = bt.VOCAB_SIZE
  ids = np.asarray(ids, np.int64)
  left, mid, right = ids[:-2], ids[1:-1], ids[2:]
  return {
    "both": np.bincount((left * v + right) * v + mid, minlength=v**3).reshape(v, v, v),
    "left": np.bincount(left * v + mid, minlength=v * v).reshape(v, v),
    "right": np.bincount(right * v + mid, minlength=v * v).reshape(v, v),
    "none": np.bincount(ids, minlength=v),
  }


def neighbour_predictions(tables: dict[str, np.ndarray], inputs: np.ndarray) -> np.ndarray:
  """The most frequent byte between the same visible neighbours, for every position of the
  masked inputs [N, L]: both neighbours when the text has that pair, else the left one, else the
  right one, else none. A neighbour is visible unless it is MASK (positions outside the row
  read as PAD). Returns int ids [N, L]."""
  padded = np.pad(np.asarray(inputs, np.int64), ((0, 0), (1, 1)), constant_values=bt.PAD)
  left, right = padded[:, :-2], padded[:, 2:]
  out = np.full(left.shape, np.argmax(tables["none"]))
  for index in np.ndindex(left.shape):
    lt, rt = left[index], right[index]
    lt_seen, rt_seen = lt != bt.MASK, rt != bt.MASK
    if lt_seen and rt_seen and tables["both"][lt, rt].any():
      out[index] = np.argmax(tables["both"][lt, rt])
    elif lt_seen and tables["left"][lt].any():
      out[index] = np.argmax(tables["left"][lt])
    elif rt_seen and tables["right"][rt].any():
      out[index] = np.argmax(tables["right"][rt])
  return out


def training_stream(config) -> np.ndarray:
  """The training text as the model reads it: documents in order, each followed by SEP."""
  docs = text.read_documents(text.split_files(config.data, "train"), config.data.one_document_per)
  stream = []
  for i in range(len(docs)):
    start, end = docs.offsets[i], docs.offsets[i + 1]
    stream.append(docs.data[start:end].astype(np.int64) + bt.OFFSET)
    stream.append(np.array([bt.SEP]))
  return np.concatenate(stream)


def baselines(config) -> dict:
  """Baselines on the evaluation's predicted bytes (see the module docstring)."""
  facts = contract.ModelFacts(tuple(config.model.input_shape), config.model.num_classes)
  data = text.make_data(config, facts, process_index=0, process_count=1)
  tables = neighbour_tables(training_stream(config))
  eval_ids, neighbour_guess = [], []
  for batch in data.eval_batches(None):
    picked = batch["labels"]["weights"] > 0
    eval_ids.append(batch["labels"]["ids"][picked])
    rows = picked.any(axis=1)
    guesses = neighbour_predictions(tables, batch["inputs"][rows])
    neighbour_guess.append(guesses[picked[rows]])
  eval_ids = np.concatenate(eval_ids)
  neighbour_guess = np.concatenate(neighbour_guess)
  target_counts = np.zeros(bt.VOCAB_SIZE)
  for step, batch in zip(range(_FIT_STEPS.value), data.train_batches(0, None), strict=False):
    del step
    labels = batch["labels"]
    np.add.at(target_counts, labels["ids"][labels["weights"] > 0], 1)
  return {
    "eval_predicted_bytes": int(len(eval_ids)),
    "unigram_of_training_targets": unigram_scores(target_counts, eval_ids),
    "unigram_of_training_text": unigram_scores(tables["none"].astype(np.float64), eval_ids),
    "neighbours_of_training_text": {
      "argmax_accuracy": float(np.mean(neighbour_guess == eval_ids)),
    },
  }


def accuracy_by_replacement(config, forward, params, state) -> dict[str, dict[str, float]]:
  """The model's and the neighbour baseline's accuracy on the evaluation's predicted bytes,
  split by what the input showed there: MASK (80%), a random byte (10%) or the byte itself
  (10%, which a model can copy). {kind: {"count", "model", "neighbours"}}."""
  facts = contract.ModelFacts(tuple(config.model.input_shape), config.model.num_classes)
  data = text.make_data(config, facts, process_index=0, process_count=1)
  tables = neighbour_tables(training_stream(config))
  apply = jax.jit(lambda ids: forward.apply(params, state, None, ids, is_training=False)[0])
  kinds = {"mask": [], "random": [], "unchanged": []}
  for batch in data.eval_batches(None):
    ids, inputs = batch["labels"]["ids"], batch["inputs"]
    picked = batch["labels"]["weights"] > 0
    model_right = np.asarray(apply(inputs)).argmax(-1) == ids
    neighbour_right = neighbour_predictions(tables, inputs) == ids
    shown = {
      "mask": inputs == bt.MASK,
      "unchanged": inputs == ids,
      "random": (inputs != bt.MASK) & (inputs != ids),
    }
    for kind, where in shown.items():
      where = where & picked
      kinds[kind].append((where.sum(), model_right[where].sum(), neighbour_right[where].sum()))
  result = {}
  for kind, rows in kinds.items():
    count, model_hits, neighbour_hits = np.sum(rows, axis=0)
    result[kind] = {
      "count": int(count),
      "model": float(model_hits / max(count, 1)),
      "neighbours": float(neighbour_hits / max(count, 1)),
    }
  return result


def read_metrics(workdir: str) -> list[dict]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f if line.strip()]


def plot(records: list[dict], base: dict, path: str) -> None:
  """Train loss and eval loss (left), eval masked accuracy against the baselines (right)."""
  train = [(r["step"], r["train/loss"]) for r in records if "train/loss" in r]
  evals = [r for r in records if "eval/masked_accuracy" in r]
  fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
  left.plot(*zip(*train, strict=True), label="train loss")
  left.plot([r["step"] for r in evals], [r["eval/loss"] for r in evals], "o-", label="eval loss")
  left.axhline(base["unigram_of_training_targets"]["loss"], ls="--", c="gray", label="unigram")
  left.set(xlabel="step", ylabel="cross-entropy (nats / masked byte)")
  left.legend()
  right.plot(
    [r["step"] for r in evals],
    [r["eval/masked_accuracy"] for r in evals],
    "o-",
    label="eval masked-byte accuracy",
  )
  right.axhline(
    base["unigram_of_training_targets"]["argmax_accuracy"],
    ls="--",
    c="gray",
    label="unigram baseline (most frequent target byte)",
  )
  right.axhline(
    base["neighbours_of_training_text"]["argmax_accuracy"],
    ls=":",
    c="black",
    label="byte between the same neighbours in the training text",
  )
  right.set(xlabel="step", ylabel="accuracy", ylim=(0, 1))
  right.legend()
  fig.suptitle("Miniature byte MLM on CPython's prose (held-out reference topics for eval)")
  fig.tight_layout()
  fig.savefig(path, dpi=100)


def main(argv):
  del argv
  config = mlm.get_config("mini")
  config.data.data_dir = _DATA_DIR.value
  base = baselines(config)
  records = read_metrics(_WORKDIR.value)
  evals = [r for r in records if "eval/masked_accuracy" in r]
  base["final_eval"] = evals[-1] if evals else None
  forward, params, state = pretrained.load_trained_model(_WORKDIR.value, config.model)
  base["by_replacement"] = accuracy_by_replacement(config, forward, params, state)
  pickle_path = os.path.join(_WORKDIR.value, "mini_bytes.pickle")
  official_format.save_official_pickle(pickle_path, params, bare=True)
  base["pickle"] = pickle_path
  os.makedirs(_RESULTS_DIR.value, exist_ok=True)
  with open(os.path.join(_RESULTS_DIR.value, "results.json"), "w") as f:
    json.dump(base, f, indent=2)
  plot(records, base, os.path.join(_RESULTS_DIR.value, "learning_curve.png"))
  print(json.dumps(base, indent=2))


if __name__ == "__main__":
  # Flags exist only when this runs as a script, so that tests can import its functions
  # next to other modules that define flags of the same names.
  _WORKDIR = flags.DEFINE_string("workdir", None, "The run's workdir.", required=True)
  _DATA_DIR = flags.DEFINE_string("data_dir", None, "prepare_text.py's output.", required=True)
  _RESULTS_DIR = flags.DEFINE_string("results_dir", os.path.dirname(__file__), "Where results go.")
  _FIT_STEPS = flags.DEFINE_integer("fit_steps", 200, "Training batches the unigram is fit on.")
  app.run(main)
