"""Mamba-2 model: config, norms, mixer, LM, fixed-size inference state, checkpoint I/O."""
