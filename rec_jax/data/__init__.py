"""Datasets (tensorflow-datasets builders) and deterministic input pipelines."""
