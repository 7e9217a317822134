"""The datasets the trainer loads by `config.data.name`, all behind the contract of `contract.py`.

  facts = datasets.ModelFacts(model.input_shapes(config.model), config.model.num_classes,
                              task.eval_windows, model.output_points(config.model))
  data = datasets.load(config, facts, process_index=..., process_count=...)

Each dataset is a module `perceiver_jax.data.<name>` with `make_data(config, facts, *,
process_index, process_count) -> Data`, imported only when it is loaded (ImageNet and
AudioSet need grain and TFDS). Dataset code reads `config.data`, `config.seed`,
`config.batch_size`, `config.eval_batch_size` and the model facts, never `config.model` or
`config.task`. In-memory datasets (Fashion-MNIST, ModelNet40) build on
`pipeline.in_memory_data`; ImageNet and AudioSet stream from array_record files. All of them
take their training order and random streams from `contract.TrainOrder`.
"""

from __future__ import annotations

import importlib

import ml_collections

from perceiver_jax.data import contract

# The contract's types, under the names the trainer uses.
ModelFacts = contract.ModelFacts
Data = contract.Data


def _module_maker(name: str):
  """`make_data` of `perceiver_jax.data.<name>`, imported on first use."""

  def make_data(config, facts, *, process_index: int, process_count: int) -> Data:
    module = importlib.import_module(f"perceiver_jax.data.{name}")
    return module.make_data(config, facts, process_index=process_index, process_count=process_count)

  return make_data


_MAKERS = {
  name: _module_maker(name)
  for name in (
    "fashion_mnist",
    "modelnet40",
    "imagenet",
    "audioset",
    "text",
    "text_tfds",
    "glue",
    "flow",
    "kinetics",
  )
}
DATASETS = tuple(_MAKERS)


def load(
  config: ml_collections.ConfigDict,
  facts: ModelFacts,
  *,
  process_index: int = 0,
  process_count: int = 1,
) -> Data:
  """The `Data` of `config.data.name` for this process. Its splits must not be empty and its
  example batch is checked against `facts` (input shapes, label width), so a dataset that
  cannot train or evaluate the model fails here, before the first step."""
  name = config.data.name
  if name not in _MAKERS:
    raise ValueError(f"config.data.name={name!r}: expected one of {DATASETS}")
  contract.check_process(process_index, process_count)
  data = _MAKERS[name](config, facts, process_index=process_index, process_count=process_count)
  dataset = f"config.data.name={name!r}"
  contract.check_split_sizes(data.num_train_examples, data.num_eval_examples, dataset)
  contract.check_example(data.example, facts, dataset)
  return data
