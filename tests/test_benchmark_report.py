"""The benchmark report: results sections and tables."""

import pathlib

from perceiver_jax.tools import benchmark_report


def test_update_results_replaces_only_its_section(tmp_path):
  path = str(tmp_path / "results.md")
  benchmark_report.update_results(path, {"a": "## a\n\nfirst a\n", "b": "## b\n\nfirst b\n"})
  benchmark_report.update_results(path, {"a": "## a\n\nsecond a\n", "c": "## c\n\nc\n"})
  text = pathlib.Path(path).read_text()
  assert "first a" not in text and "second a" in text and "first b" in text
  assert text.index("## a") < text.index("## b") < text.index("## c")


def test_memory_table_rows():
  row = dict(
    mode="plain",
    xla_temp_bytes=2**30,
    xla_total_bytes=3 * 2**29,
    peak_rss_bytes=2**31,
    compile_s=1.25,
    step_s_median=0.5,
    loss=2.302585,
  )
  lines = benchmark_report.memory_table([row])
  assert lines[2] == "| plain | 1.00 GiB | 1.50 GiB | 2.00 GiB | 1.2 s | 0.5 s | 2.3026 |"
