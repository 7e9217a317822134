"""The peer benchmark: this package next to the PyTorch Perceivers, in one run."""
