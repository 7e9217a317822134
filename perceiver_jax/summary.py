"""`python -m perceiver_jax.summary --config=...`: a model's parameter table (`tools.summary`)."""

from absl import app

from perceiver_jax.tools import summary

if __name__ == "__main__":
  app.run(summary.main)
