"""The papers' Haiku modules: attention, position encodings, the encoder, decoders, input
preprocessors and the baselines they are compared with."""
