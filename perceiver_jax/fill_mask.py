"""`python -m perceiver_jax.fill_mask --config=... --checkpoint=... --text=... --mask=...`: a
byte language model's guess at the hidden bytes of a sentence (`tools.fill_mask`)."""

from absl import app

from perceiver_jax.tools import fill_mask

if __name__ == "__main__":
  app.run(fill_mask.main)
