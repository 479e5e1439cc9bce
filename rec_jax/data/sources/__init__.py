"""Strict readers for the raw benchmark files, one module per family.

Each reader turns the public files of one benchmark (layouts in
shared/data/README.md) into a `types.SequenceDataset`: `s3rec` (Beauty,
Toys, Sports, Yelp, LastFM), `movielens` (ml-1m, ml-100k) and `amazon`
(Amazon Scientific), on top of `files` (the errors, line and JSON readers
they share, and the new-interactions reader of retraining). The TFDS
builders in `rec_jax.data.builders` call these readers once, at preparation
time, and cache the result; nothing else should parse raw files.

Readers fail loudly: anything unexpected raises `files.DataError` (a
`ValueError`) whose message names the file and the 1-based line number or
JSON key, so a truncated download or a hand-edited file never becomes a
silently wrong benchmark number.
"""
