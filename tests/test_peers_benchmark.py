"""benchmarks/peers: the interleaved side-by-side run (our side; the PyTorch peers live in
their own environment, never CI's), its table and its section of results.md."""

import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.peers import run  # noqa: E402


def _row(impl, step_s, flops=1e9, workload="io-small"):
  return {
    "workload": workload,
    "dtype": "float32",
    "impl": impl,
    "num_params": 10,
    "batch_size": 8,
    "step_s_median": step_s,
    "train_flops_per_step": flops,
    "achieved_flops_per_s": flops / step_s,
    "peak_rss_bytes": 2**30,
    "system_s_per_step": 0.001,
    "minor_faults_per_step": 3,
  }


def test_table_gives_each_peer_its_ratio_to_ours():
  rows = [_row("ours io-small", 1.0), _row("hf", 1.5), _row("lucidrains", 2.0, flops=4e9)]
  text = run.table(rows, {"float32": {"flops_per_s": 1e10}})
  lines = text.splitlines()
  assert len(lines) == 5
  ours, hf, lucidrains = lines[2:]
  assert "| 1,000 ms |  |" in ours and "10.0%" in ours
  assert "| 1.50x (FLOP/s 1.50x) |" in hf
  # 4x the FLOPs in 2x the time: its FLOP/s is twice ours.
  assert "| 2.00x (FLOP/s 0.50x) |" in lucidrains


def test_table_of_peers_alone_has_no_ratio():
  # `--impls=hf`: a peer's memory and time without ours in the run.
  (row,) = run.table([_row("hf", 1.5)], {"float32": {"flops_per_s": 1e10}}).splitlines()[2:]
  assert "| 1,500 ms |  |" in row and "1.00 GiB" in row


def test_write_section_replaces_only_its_own_section(tmp_path):
  path = tmp_path / "results.md"
  path.write_text(
    "# Benchmarks\n\n## io-small\n\nold suite\n\n## peers\n\nold peers\n\n## tail\n\nkept\n"
  )
  run.write_section(path, "## peers\n\nnew peers\n")
  text = path.read_text()
  assert "old suite" in text and "kept" in text and "new peers" in text
  assert "old peers" not in text and text.count("## peers") == 1
  # Another machine's section (`--section`) sits beside it.
  run.write_section(path, "## peers (other CPU)\n\nother\n")
  run.write_section(path, "## peers (other CPU)\n\nother again\n")
  text = path.read_text()
  assert "new peers" in text and "other again" in text and "\nother\n" not in text
  assert text.count("## peers (other CPU)") == 1
  run.write_section(tmp_path / "new.md", "## peers\n\nfirst\n")
  assert (tmp_path / "new.md").read_text().startswith("# Benchmarks\n\n## peers")


def test_our_side_runs_in_alternating_rounds(tmp_path):
  results, out = tmp_path / "results.md", tmp_path / "peers.json"
  run.main(
    [
      "--impls=ours",
      "--workloads=io-small",
      "--dtypes=float32",
      "--rounds=2",
      "--steps=1",
      "--warmup=1",
      f"--results={results}",
      f"--json={out}",
    ]
  )
  measured = json.loads(out.read_text())
  (row,) = measured["results"]
  assert row["impl"] == "ours io-small" and row["num_params"] == 8_960_341
  assert row["steps_timed"] == 2 and len(row["step_s_round_medians"]) == 2
  # The analytic count of `flops.train_flops` at batch 8.
  assert round(row["train_flops_per_step"] / 1e9, 2) == 249.68
  assert measured["peaks"]["float32"]["size"] in (1024, 2048, 3072, 4096)
  text = results.read_text()
  assert "## peers" in text and "| io-small | float32 | ours io-small | 8,960,341 | 8 |" in text
