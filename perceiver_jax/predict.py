"""`python -m perceiver_jax.predict --config=... --checkpoint=... --input=...`: a model's
top classes for one input (`tools.predict`)."""

from absl import app

from perceiver_jax.tools import predict

if __name__ == "__main__":
  app.run(predict.main)
