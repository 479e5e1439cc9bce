"""tensorflow-datasets builders for the benchmarks, usable without TensorFlow.

One `GeneratorBasedBuilder` per dataset turns the raw files (read by
`rec_jax.data.sources`) into an ArrayRecord dataset in a writable cache;
ArrayRecord plus `as_data_source()` is the TFDS path that needs no TensorFlow
(shared/notes/stack_probe.md). `base` holds what every builder shares (the
stored layout, downloads, preparing and reading back), one module per
family holds its builders (`s3rec`, `movielens`, `amazon`), and `catalog`
maps dataset names to builders and picks the cache key. `datasets.load` is
the usual entry point; use `catalog.make_builder` and `base.prepare`
directly to hand a prepared dataset to a loader of your own (its
`as_data_source()` is random-access: grain's `MapDataset.source` takes it).
"""
