"""Tools over trained and released models: summary, prediction, attention maps, benchmarks."""
