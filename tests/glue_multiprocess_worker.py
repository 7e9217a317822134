"""One process of a GLUE evaluation, for tests/test_glue_multiprocess.py.

  python tests/glue_multiprocess_worker.py DATA_DIR OUT.json NUM_PROCESSES PROCESS_ID PORT

For CoLA, MRPC and STS-B (`configs/glue.py:task=...,runlocal`, global eval batch 4): the same
params in every process (initialised from seed 0; a classifier's output bias set so that its
predictions split the dev set), evaluated by the trainer's `train.evaluate` over this
process's share of the dev split. Process 0 writes OUT.json: per task the metrics, and the
model's outputs and labels of every dev example from one forward pass over the whole split;
and `glue_predict`'s error when it is asked to run in several processes.
"""

import functools
import json
import os
import sys

os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import numpy as np  # noqa: E402

from configs import glue as glue_config  # noqa: E402
from perceiver_jax import glue_predict  # noqa: E402
from perceiver_jax import model  # noqa: E402
from perceiver_jax import tasks  # noqa: E402
from perceiver_jax import train  # noqa: E402
from perceiver_jax import train_step as ts  # noqa: E402
from perceiver_jax.data import datasets  # noqa: E402
from perceiver_jax.data import glue  # noqa: E402

TASKS = ("cola", "mrpc", "stsb")
EVAL_BATCH_SIZE = 4


@functools.cache
def _model(num_outputs: int):
  """(config.model, jitted apply(params, state, ids [N, L]) -> [N, K], pmapped eval step, and
  the seed-0 (params, state)) of the `runlocal` model with K = `num_outputs`; built once per K,
  so that CoLA and MRPC share their compiled functions."""
  config = glue_config.get_config(
    "task=stsb,runlocal" if num_outputs == 1 else "task=mrpc,runlocal"
  )
  forward = model.build_model(config.model)
  apply = jax.jit(
    lambda params, state, ids: forward.apply(params, state, None, ids, is_training=False)[0]
  )
  p_eval_step = jax.pmap(ts.make_eval_step(forward, tasks.get(config.task)), axis_name=ts.AXIS)
  if num_outputs == 2:
    init = jax.jit(functools.partial(forward.init, is_training=True))
    params, state = init(jax.random.PRNGKey(0), model.dummy_inputs(config.model))
  else:  # the 2-output model's params with its first output only: one init to compile
    params, state = _model(2)[3]
    output = params["sentence_decoder/output"]
    params = {**params, "sentence_decoder/output": {"w": output["w"][:, :1], "b": output["b"][:1]}}
  return config.model, apply, p_eval_step, (params, state)


def _evaluate(name: str, data_dir: str) -> dict:
  """{"metrics": `train.evaluate`'s, "outputs": [N, K] and "labels": [N] of the dev split}.

  A classifier's class-1 output bias is moved so that half of the dev examples are predicted
  class 1 and half class 0 (F1 and Matthews are then not degenerate)."""
  config = glue_config.get_config(f"task={name},runlocal")
  config.data.data_dir = data_dir
  config.eval_batch_size = EVAL_BATCH_SIZE
  task = tasks.get(config.task)
  model_cfg, apply, p_eval_step, (params, state) = _model(config.model.num_classes)
  assert model_cfg == config.model, name
  facts = datasets.ModelFacts(model.input_shapes(config.model), config.model.num_classes, 0)
  data = datasets.load(
    config, facts, process_index=jax.process_index(), process_count=jax.process_count()
  )
  dev = glue.read_split(data_dir, name, "dev", config.model.input_shape[0])
  if not task.is_regression:
    logits = np.asarray(apply(params, state, dev.ids))
    margin = np.sort(logits[:, 1] - logits[:, 0])
    half = len(margin) // 2
    cut = (margin[half - 1] + margin[half]) / 2  # halfway between two examples: no near-ties
    output = dict(params["sentence_decoder/output"])
    output["b"] = output["b"].at[1].add(-cut)
    params = {**params, "sentence_decoder/output": output}
  devices = jax.local_device_count()
  replicated = ts.replicate(params, devices), ts.replicate(state, devices)
  metrics = train.evaluate(p_eval_step, *replicated, data, task, EVAL_BATCH_SIZE)
  return {
    "metrics": metrics,
    "outputs": np.asarray(apply(params, state, dev.ids), np.float64).tolist(),
    "labels": dev.labels.tolist(),
  }


def main(data_dir, out, num_processes, process_id, port):
  num_processes, process_id = int(num_processes), int(process_id)
  if num_processes > 1:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes, process_id)
  results = {name: _evaluate(name, data_dir) for name in TASKS}
  if num_processes > 1:
    try:
      config = glue_config.get_config("task=sst2,runlocal")
      glue_predict.write_predictions(config, out + ".workdir", out + ".submit", 4)
    except ValueError as error:
      results["glue_predict_error"] = str(error)
  if process_id == 0:
    with open(out, "w") as f:
      json.dump(results, f)


if __name__ == "__main__":
  main(*sys.argv[1:])
