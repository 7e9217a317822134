"""Dataset-independent host batching for in-memory arrays, multi-process aware.

Every function takes `arrays`, a dict of numpy arrays sharing their leading
(example) dimension N, and yields dicts with the same keys. `batch_size` is the
global batch over all processes; each process yields its local share
batch_size // process_count, reshaped to `[*shape_prefix, ...]`, e.g.
shape_prefix=(jax.local_device_count(), per_device) for pmap.

Training order is a pure function of (seed, step): epoch e uses the permutation
np.random.default_rng((seed, e)) of all N examples, and each process takes its
contiguous slice of that permuted order. So resuming at any step reproduces the
uninterrupted run exactly, without replaying the earlier steps.
"""

import queue
import threading
from collections.abc import Iterator
from collections.abc import Sequence

import numpy as np

Batch = dict[str, np.ndarray]


def shard_for_process(
  num_examples: int, process_index: int, process_count: int, *, drop_remainder: bool = True
) -> np.ndarray:
  """Indices into [0, num_examples) that belong to this process, contiguous.

  With drop_remainder=True (training) every process gets num_examples //
  process_count examples, so all processes run the same number of steps; the
  remainder is dropped. With drop_remainder=False (evaluation) every example goes
  to exactly one process: the first num_examples % process_count processes get
  one extra.

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


def check_process(process_index: int, process_count: int) -> None:
  """ValueError unless 0 <= process_index < process_count."""
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} must be in [0, process_count={process_count})")


def _num_examples(arrays: Batch) -> int:
  """The shared leading dimension N of all arrays."""
  if not arrays:
    raise ValueError("arrays is empty: need at least one array")
  sizes = {key: len(value) for key, value in arrays.items()}
  if len(set(sizes.values())) != 1:
    raise ValueError(f"arrays disagree on the number of examples: {sizes}")
  return next(iter(sizes.values()))


def local_shape(batch_size: int, process_count: int, shape_prefix: Sequence[int] | None):
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


def _gather(arrays: Batch, indices: np.ndarray, prefix: tuple[int, ...]) -> Batch:
  return {k: v[indices].reshape(*prefix, *v.shape[1:]) for k, v in arrays.items()}


def train_batches(
  arrays: Batch,
  batch_size: int,
  *,
  seed: int,
  start_step: int = 0,
  process_index: int = 0,
  process_count: int = 1,
  shape_prefix: Sequence[int] | None = None,
) -> Iterator[Batch]:
  """Infinite shuffled training batches, starting at global step `start_step`.

  Step k's global batch is the k-th run of `batch_size` examples in the epoch's
  permutation (the same for every process count); process p takes its slice p of it.
  So the data a model sees does not depend on how many hosts share the work, and a
  resumed run sees exactly the batches an uninterrupted one would. The last partial
  batch of an epoch is dropped so that every step is full.

  Yields:
    {key: [*shape_prefix, ...]} with prod(shape_prefix) == batch_size // process_count.
  """
  num_examples = _num_examples(arrays)
  check_process(process_index, process_count)
  local, prefix = local_shape(batch_size, process_count, shape_prefix)
  steps_per_epoch = num_examples // batch_size
  if steps_per_epoch == 0:
    raise ValueError(f"batch_size={batch_size} exceeds the {num_examples} training examples")
  if start_step < 0:
    raise ValueError(f"start_step={start_step} must be >= 0")
  # Validation above runs at call time; the generator below only on first next().
  epoch, offset = divmod(start_step, steps_per_epoch)
  return _train_iter(arrays, batch_size, local, process_index, prefix, seed, epoch, offset)


def _train_iter(arrays, batch_size, local, process_index, prefix, seed, epoch, offset):
  num_examples = _num_examples(arrays)
  steps_per_epoch = num_examples // batch_size
  while True:
    order = np.random.default_rng((seed, epoch)).permutation(num_examples)
    for step in range(offset, steps_per_epoch):
      start = step * batch_size + process_index * local
      yield _gather(arrays, order[start : start + local], prefix)
    epoch, offset = epoch + 1, 0


def eval_batches(
  arrays: Batch,
  batch_size: int,
  *,
  process_index: int = 0,
  process_count: int = 1,
  shape_prefix: Sequence[int] | None = None,
) -> Iterator[Batch]:
  """One pass over this process's evaluation shard, in order.

  Every process yields the same number of batches (that of the largest shard), so
  processes stepping a pmapped eval in lockstep never wait on one another. Missing
  examples are zero-filled and flagged by `mask`; summing `mask`-weighted metrics
  over all processes counts each of the N examples exactly once.

  Yields:
    {key: [*shape_prefix, ...], 'mask': float32 [*shape_prefix]} (1 real, 0 padding).
  """
  if "mask" in arrays:
    raise ValueError("arrays already has a 'mask' key, which eval_batches adds")
  num_examples = _num_examples(arrays)
  local, prefix = local_shape(batch_size, process_count, shape_prefix)
  indices = padded_eval_indices(num_examples, local, process_index, process_count)
  return _eval_iter(arrays, indices, local, prefix)


def _eval_iter(arrays, indices, local, prefix) -> Iterator[Batch]:
  for start in range(0, len(indices), local):
    batch_indices = indices[start : start + local]
    real = batch_indices >= 0
    batch = {}
    for key, value in arrays.items():
      padded = np.zeros((local, *value.shape[1:]), value.dtype)
      padded[real] = value[batch_indices[real]]
      batch[key] = padded.reshape(*prefix, *value.shape[1:])
    batch["mask"] = real.astype(np.float32).reshape(prefix)
    yield batch


_END = object()


class _ProducerError:
  """Carries an exception from the producer thread to the consumer."""

  def __init__(self, error: BaseException):
    self.error = error


def prefetch(iterator: Iterator, size: int = 2) -> Iterator:
  """Yields the items of `iterator`, produced up to `size` ahead on a background thread.

  An exception raised by `iterator` is re-raised in the consumer at the point it
  occurred. Closing the returned generator (or dropping it) stops the thread.
  """
  if size < 1:
    raise ValueError(f"size={size} must be >= 1")
  return _prefetch(iterator, size)


def _prefetch(iterator: Iterator, size: int) -> Iterator:
  buffer = queue.Queue(maxsize=size)
  stop = threading.Event()

  def put(item) -> bool:
    # A bounded wait, so a consumer that went away cannot block the thread forever.
    while not stop.is_set():
      try:
        buffer.put(item, timeout=0.05)
        return True
      except queue.Full:
        continue
    return False

  def produce():
    try:
      for item in iterator:
        if not put(item):
          return
      put(_END)
    except BaseException as error:  # Re-raised by the consumer, so nothing is swallowed.
      put(_ProducerError(error))

  thread = threading.Thread(target=produce, name="prefetch", daemon=True)
  thread.start()
  try:
    while True:
      item = buffer.get()
      if item is _END:
        return
      if isinstance(item, _ProducerError):
        raise item.error
      yield item
  finally:
    stop.set()
    thread.join(timeout=5.0)
