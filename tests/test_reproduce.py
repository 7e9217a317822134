"""perceiver_jax/tools/reproduce.py, experiments/*/experiment.py and scripts/reproduce.py: the
experiments' grids, their configs, their resumption and their reports."""

import csv
import os
import pathlib
import subprocess
import sys

import pytest
from conftest import write_fashion_mnist

from perceiver_jax.tools import reproduce

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def fmnist_dir(tmp_path_factory):
  """300 training and 40 test images: enough for the configs' batch of 128."""
  return write_fashion_mnist(tmp_path_factory.mktemp("fmnist300"), 300, 40)


def _reproduce(name, tmp_path, data_dir):
  return subprocess.run(
    [
      sys.executable,
      "scripts/reproduce.py",
      name,
      "--quick",
      f"--runs_dir={tmp_path / 'runs'}",
      f"--out_dir={tmp_path / 'out'}",
      f"--data_dir={data_dir}",
    ],
    cwd=REPO_ROOT,
    env={**os.environ, "JAX_PLATFORMS": "cpu"},
    capture_output=True,
    text=True,
    timeout=600,
  )


def test_every_experiment_is_defined_beside_its_results():
  folders = {name: folder for name, (folder, _) in reproduce.definitions().items()}
  assert folders == {
    "table2": "permuted",
    "table6": "cross_attends",
    "table7": "weight_sharing",
    "attention": "attention_maps",
  }
  for folder in folders.values():
    assert (reproduce.EXPERIMENTS_DIR / folder / "results.md").exists()


def test_experiments_are_the_papers_grids():
  table2 = reproduce.load("table2").experiment(quick=False)
  assert len(table2.rows) == 10 and table2.seeds == (0, 1, 2)
  assert {r.config_arg for r in table2.rows} >= {
    "model=fmnist_convnet_ff,permuted=True",
    "model=fmnist_perceiver_ff,permuted=False",
  }
  table6 = reproduce.load("table6").experiment(quick=False)
  assert [dict(r.labels)["cross-attends"] for r in table6.rows] == ["1", "2", "4", "8"] * 2
  for row in table6.rows:  # a fixed latent depth of 8 self-attends
    cfg = reproduce.config(row).model
    assert cfg.num_blocks * cfg.num_self_attends_per_block == 8
  assert [reproduce.config(r).model.cross_attend_placement for r in table6.rows] == (
    ["interleaved"] * 4 + ["start"] * 4
  )
  rows = reproduce.load("table7").experiment(quick=False).rows
  shared, unshared = (reproduce.config(r).model for r in rows)
  assert shared.share_latent_block_weights and not unshared.share_latent_block_weights
  assert shared.share_cross_attend_weights and not unshared.share_cross_attend_weights
  with pytest.raises(ValueError, match="unknown experiment 'table9'"):
    reproduce.load("table9")


def test_row_config_is_parsed_by_config_flags():
  """The row's flags are the trainer's: types come from the config, a misspelt field fails."""
  row = reproduce.Row("r", "model=fmnist_perceiver_ff", overrides=(("model.num_blocks", 3),))
  assert row.flags == ["--config.model.num_blocks=3"]
  assert reproduce.config(row).model.num_blocks == 3
  typo = reproduce.Row("r", "", overrides=(("model.num_blokcs", 3),))
  with pytest.raises(AttributeError, match="num_blokcs"):
    reproduce.config(typo)


def test_runs_keep_the_recipe_they_were_measured_with():
  """The experiments' fixed step budgets train with flat-then-cosine AdamW 2e-3 and no label
  smoothing, whatever the default experiment's own recipe is."""
  config = reproduce.config(reproduce.Row("r", ""), *reproduce._budget_flags(250, None))
  assert config.optimizer.schedule == "constant_cosine"
  assert config.optimizer.learning_rate == 2e-3 and config.optimizer.warmup_steps == 0
  assert config.task.label_smoothing == 0.0 and config.total_steps == 250


def test_table2_report_gives_mean_std_and_change(tmp_path):
  table2 = reproduce.load("table2")
  exp = table2.experiment(quick=False)
  records = []
  for row in exp.rows:
    permuted = dict(row.labels)["inputs"] == "permuted"
    base = 0.5 if "convnet" in row.name and permuted else 0.8
    for seed in exp.seeds:
      records.append(
        dict(
          row=row,
          seed=seed,
          run_dir=f"{row.name}/{seed}",
          top1=base + 0.01 * seed,
          top5=0.99,
          loss=0.5,
          seconds=10.0,
        )
      )
  table = table2.report(records, exp, str(tmp_path), reproduce.Options())
  convnet = next(line for line in table.splitlines() if line.startswith("| ConvNet"))
  assert "| 81.0 ± 1.0 | 51.0 ± 1.0 | -30.0 |" in convnet
  assert "73.5 -> 39.4" in convnet
  perceiver = next(line for line in table.splitlines() if line.startswith("| Perceiver (FF)"))
  assert "| 81.0 ± 1.0 | 81.0 ± 1.0 | +0.0 |" in perceiver
  with open(tmp_path / "results.csv") as f:
    assert len(list(csv.reader(f))) == 1 + 30
  assert (tmp_path / "plot.png").stat().st_size > 1000


def test_quick_table7_trains_reports_and_resumes(tmp_path, fmnist_dir):
  result = _reproduce("table7", tmp_path, fmnist_dir)
  assert result.returncode == 0, result.stderr[-3000:]
  out = tmp_path / "out" / "weight_sharing"
  table = (out / "results.md").read_text()
  shared = next(line for line in table.splitlines() if line.startswith("| shared"))
  unshared = next(line for line in table.splitlines() if line.startswith("| not shared"))
  assert "307,982" in shared  # the default experiment's model: sharing is its default
  assert int(unshared.split("|")[4].strip().replace(",", "")) > 307_982
  with open(out / "results.csv") as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 2 and all(0 <= float(r["test_top1"]) <= 1 for r in rows)
  assert all(0 <= float(r["train_top1"]) <= 1 for r in rows)
  assert (out / "plot.png").exists()
  # Rerunning trains nothing and rebuilds the same table.
  before = (out / "results.csv").read_text()
  again = _reproduce("table7", tmp_path, fmnist_dir)
  assert again.returncode == 0 and again.stdout.count("finished before, skipped") == 2
  assert (out / "results.csv").read_text() == before


def test_quick_attention_maps(tmp_path, fmnist_dir):
  result = _reproduce("attention", tmp_path, fmnist_dir)
  assert result.returncode == 0, result.stderr[-3000:]
  out = tmp_path / "out" / "attention_maps"
  pngs = sorted(p.name for p in out.glob("attention_*.png"))
  assert pngs == [f"attention_{i}.png" for i in range(4)]
  assert "Perceiver (FF)" in (out / "results.md").read_text()


def test_unknown_experiment_is_a_usage_error(tmp_path, fmnist_dir):
  result = _reproduce("table9", tmp_path, fmnist_dir)
  assert result.returncode != 0 and "usage: reproduce.py" in result.stderr
