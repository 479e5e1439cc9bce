"""Flax NNX models; every parameter carries logical axis names."""
