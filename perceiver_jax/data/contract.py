"""The data contract every dataset follows: what the trainer gets, and which example goes where.

A dataset's `make_data(config, facts, *, process_index, process_count)` returns a `Data`.
Batches are numpy dicts with exactly these keys:
  "inputs"  float32 [*prefix, ...], or a dict of such arrays keyed by modality;
  "labels"  int32 [*prefix] class ids, or float32 [*prefix, K] (soft or multi-hot labels),
            or float32 [*prefix] regression targets (GLUE's STS-B scores);
            or, for masked language modelling (inputs int32 byte ids [*prefix, L]), a dict
            {"ids": int32 [*prefix, L] original ids, "weights": float32 [*prefix, L] 1 at the
            positions to predict, else 0};
            or, for optical flow (inputs frame pairs [*prefix, 2, H, W, 3]), a dict {"flow":
            float32 [*prefix, H, W, 2], "valid": float32 [*prefix, H, W]} (evaluation adds
            "tile", see perceiver_jax/tasks/flow.py);
            or, for multimodal autoencoding, a dict {"class": int32 [*prefix]} and in
            training the output points to decode, "<modality>_points" int32 [*prefix, O]
            (see perceiver_jax/data/kinetics.py);
  "mask"    (evaluation only) float32 [*prefix], 1 for a real example, 0 for padding.
prefix = (local_devices, per_device) is this process's share of the global batch. With
`facts.eval_windows = W > 0` evaluation inputs carry a window axis, [*prefix, W, ...].

`TrainOrder` is the one mapping from (seed, step) to training examples: epoch e visits the
N examples in the permutation default_rng((seed, e)); global step k takes the k-th run of
`batch_size` examples of its epoch (the last partial batch of an epoch is dropped), and
process p takes slots [p * local, (p + 1) * local) of it. Slot j of step k draws its
augmentation from default_rng((seed, stream, k, j)). So a step's global batch does not depend
on the number of processes, and a resumed run sees exactly the batches of an uninterrupted
one without replaying the earlier steps.

Evaluation shards every example to exactly one process (`padded_eval_indices`), padded so
that every process runs the same number of batches.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Sequence

import numpy as np

Batch = dict
Prefix = tuple[int, ...]
# Shapes of one example's inputs without the batch axis: a tuple, or a dict of tuples.
InputShapes = tuple[int, ...] | dict[str, tuple[int, ...]]

# Random streams of `TrainOrder.rng`, so that different uses never share draws.
AUGMENT_STREAM = 1
MIX_STREAM = 2


@dataclasses.dataclass(frozen=True)
class ModelFacts:
  """What the data layer needs to know about the model, passed in by the trainer.

  Attributes:
    input_shapes: one example's input shape(s) without the batch axis, e.g. (28, 28, 1), or
      {"audio": (61440,), "video": (32, 224, 224, 3)} for a model of several modalities.
    num_classes: K, the width of one-hot, soft and multi-hot labels.
    eval_windows: W > 0 gives evaluation inputs a window axis [*prefix, W, ...]; 0 none.
    output_points: for a decoder that decodes chosen output points (the multimodal
      autoencoder's), how many points each modality's output has, e.g. {"audio": 1920,
      "image": 802816, "label": 1}; None for other models.
  """

  input_shapes: InputShapes
  num_classes: int
  eval_windows: int = 0
  output_points: dict[str, int] | None = None


@dataclasses.dataclass(frozen=True)
class Data:
  """A dataset as the trainer sees it (see the module docstring for the batch layout).

  Attributes:
    num_train_examples: global size of the training split (epochs -> steps).
    num_eval_examples: global number of examples one evaluation pass counts.
    train_batches: (start_step, prefix) -> infinite iterator of this process's training
      batches from global step `start_step` on.
    eval_batches: prefix -> one pass over this process's share of the evaluation split;
      every process yields the same number of batches and each example is counted once.
    example: one training batch with prefix (1,), used to initialise the model.
  """

  num_train_examples: int
  num_eval_examples: int
  train_batches: Callable[[int, Prefix], Iterator[Batch]]
  eval_batches: Callable[[Prefix], Iterator[Batch]]
  example: Batch


@functools.lru_cache(maxsize=2)
def _permutation(seed: int, epoch: int, num_examples: int) -> np.ndarray:
  return np.random.default_rng((seed, epoch)).permutation(num_examples)


@dataclasses.dataclass(frozen=True)
class TrainOrder:
  """Training examples and random streams as a pure function of (seed, step, slot).

  A slot is a position in a step's global batch, [0, batch_size); this process owns slots
  [first_slot, first_slot + local). Picklable, so grain worker processes can use it.
  """

  num_examples: int
  batch_size: int
  seed: int
  process_index: int = 0
  process_count: int = 1

  def __post_init__(self):
    check_process(self.process_index, self.process_count)
    local_shape(self.batch_size, self.process_count, None)
    if self.steps_per_epoch == 0:
      raise ValueError(
        f"batch_size={self.batch_size} exceeds the {self.num_examples} training examples"
      )

  @property
  def local(self) -> int:
    """Examples per step on this process."""
    return self.batch_size // self.process_count

  @property
  def first_slot(self) -> int:
    return self.process_index * self.local

  @property
  def steps_per_epoch(self) -> int:
    return self.num_examples // self.batch_size

  def index(self, step: int, slot: int, skip: int = 0) -> int:
    """The example in slot `slot` of global step `step`; `skip` > 0 takes the one `skip`
    places later in the epoch's order (a replacement for an unreadable example)."""
    epoch, step_in_epoch = divmod(step, self.steps_per_epoch)
    position = step_in_epoch * self.batch_size + slot + skip
    return int(_permutation(self.seed, epoch, self.num_examples)[position % self.num_examples])

  def local_indices(self, step: int) -> np.ndarray:
    """int64 [local]: the examples of this process's slots at `step`, in slot order."""
    epoch, step_in_epoch = divmod(step, self.steps_per_epoch)
    start = step_in_epoch * self.batch_size + self.first_slot
    return _permutation(self.seed, epoch, self.num_examples)[start : start + self.local]

  def step_and_slot(self, start_step: int, counter: int) -> tuple[int, int]:
    """(step, slot) of this process's `counter`-th example of a run resumed at `start_step`."""
    step, i = divmod(counter, self.local)
    return start_step + step, self.first_slot + i

  def rng(self, stream: int, step: int, slot: int) -> np.random.Generator:
    """The random generator of one slot (or of one pair of slots, say) in one stream."""
    return np.random.default_rng((self.seed, stream, step, slot))


def check_process(process_index: int, process_count: int) -> None:
  """ValueError unless 0 <= process_index < process_count."""
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} must be in [0, process_count={process_count})")


def check_split_sizes(num_train: int, num_eval: int, dataset: str) -> None:
  """ValueError naming `dataset` unless both splits hold an example (an empty evaluation split
  would otherwise fail only at the first evaluation, after all the training)."""
  for split, size in (("training", num_train), ("evaluation", num_eval)):
    if size < 1:
      raise ValueError(f"{dataset}: the {split} split is empty ({size} examples)")


def check_start_step(start_step: int) -> None:
  if start_step < 0:
    raise ValueError(f"start_step={start_step} must be >= 0")


def local_shape(
  batch_size: int, process_count: int, shape_prefix: Sequence[int] | None
) -> tuple[int, Prefix]:
  """The per-process batch size and the leading shape every yielded array gets.

  Raises ValueError, naming the values, unless batch_size is a positive multiple of
  process_count whose per-process share is prod(shape_prefix).
  """
  if batch_size < 1 or batch_size % process_count:
    raise ValueError(
      f"batch_size={batch_size} must be a positive multiple of process_count={process_count}"
    )
  local = batch_size // process_count
  prefix = (local,) if shape_prefix is None else tuple(shape_prefix)
  if int(np.prod(prefix)) != local:
    raise ValueError(
      f"shape_prefix={prefix} has product {int(np.prod(prefix))}, but the per-process batch is "
      f"batch_size={batch_size} // process_count={process_count} = {local}"
    )
  return local, prefix


def shard_for_process(
  num_examples: int, process_index: int, process_count: int, *, drop_remainder: bool = True
) -> np.ndarray:
  """Indices into [0, num_examples) that belong to this process, contiguous.

  With drop_remainder=True every process gets num_examples // process_count examples and
  the remainder is dropped. With drop_remainder=False every example goes to exactly one
  process: the first num_examples % process_count processes get one extra.

  Returns:
    int64 [n_local] indices.
  """
  check_process(process_index, process_count)
  base, remainder = divmod(num_examples, process_count)
  if drop_remainder:
    start, size = process_index * base, base
  else:
    start = process_index * base + min(process_index, remainder)
    size = base + (process_index < remainder)
  return np.arange(start, start + size)


def padded_eval_indices(
  num_examples: int, local: int, process_index: int, process_count: int
) -> np.ndarray:
  """This process's evaluation indices, padded with -1 to whole batches of `local`.

  Every process gets the same length (whole batches of the largest shard), so processes
  stepping a pmapped eval in lockstep never wait on one another; -1 marks a padding row.
  """
  shard = shard_for_process(num_examples, process_index, process_count, drop_remainder=False)
  largest_shard = -(-num_examples // process_count)
  indices = np.full(-(-largest_shard // local) * local, -1, np.int64)
  indices[: len(shard)] = shard
  return indices


def to_prefix(batch: dict, prefix: Sequence[int]) -> dict:
  """[local, ...] leaves (nested dicts allowed) -> [*prefix, ...]."""
  return {
    key: to_prefix(value, prefix)
    if isinstance(value, dict)
    else np.asarray(value).reshape(*prefix, *np.shape(value)[1:])
    for key, value in batch.items()
  }


def check_example(example: Batch, facts: ModelFacts, dataset: str, *, windows: int = 0) -> None:
  """ValueError naming the dataset unless a batch of prefix (1,) fits the model's facts.

  `windows` > 0: the inputs carry a window axis of that size after the batch axis.
  """
  leading = (1, windows) if windows else (1,)
  shapes = facts.input_shapes
  if isinstance(shapes, dict):
    expected = {key: (*leading, *shape) for key, shape in shapes.items()}
  else:
    expected = (*leading, *shapes)
  got = _shapes(example["inputs"])
  if got != expected:
    raise ValueError(f"{dataset} gives inputs of shape {got}, the model takes {expected}")
  if isinstance(example["labels"], dict) and "flow" in example["labels"]:  # optical flow
    _check_flow_labels(example["labels"], expected, dataset)
    return
  if isinstance(example["labels"], dict) and "class" in example["labels"]:  # autoencoding
    _check_autoencoding_labels(example["labels"], dataset)
    return
  if isinstance(example["labels"], dict):  # per-position labels of a sequence model
    want = {"ids": expected, "weights": expected}
    if _shapes(example["labels"]) != want:
      raise ValueError(
        f"{dataset} gives labels of shapes {_shapes(example['labels'])}, the model needs {want}"
      )
    return
  labels = np.shape(example["labels"])
  if labels not in ((1,), (1, facts.num_classes)):
    raise ValueError(
      f"{dataset} gives labels of shape {labels} for a model of {facts.num_classes} classes"
    )


def _check_flow_labels(labels: dict, inputs: tuple, dataset: str) -> None:
  """Flow labels of a frame-pair batch [1, 2, H, W, C]: flow [1, H, W, 2], valid [1, H, W]."""
  height, width = inputs[2:4]
  want = {"flow": (1, height, width, 2), "valid": (1, height, width)}
  if _shapes(labels) != want:
    raise ValueError(f"{dataset} gives labels of shapes {_shapes(labels)}, the model needs {want}")


def _check_autoencoding_labels(labels: dict, dataset: str) -> None:
  """Autoencoding labels: class [1], and in training output points [1, O] per modality."""
  shapes = _shapes(labels)
  points = {key for key in shapes if key.endswith("_points")}
  if set(shapes) - points != {"class"} or shapes["class"] != (1,):
    raise ValueError(f"{dataset} gives labels of shapes {shapes}, the model needs class (1,)")
  for key in points:
    if len(shapes[key]) != 2 or shapes[key][0] != 1:
      raise ValueError(f"{dataset} gives {key} of shape {shapes[key]}, expected (1, O)")


def _shapes(tree):
  """The shape of an array, or a dict of the shapes of a dict's arrays."""
  if isinstance(tree, dict):
    return {key: _shapes(value) for key, value in tree.items()}
  return tuple(np.shape(tree))
