"""The in-memory form of an interaction dataset that every stage consumes."""

import dataclasses

import numpy as np


@dataclasses.dataclass
class SequenceDataset:
  """Chronological item sequences of every user, plus optional item features.

  Item ids are 1..num_items; 0 is padding and never appears in `sequences`.
  User u (1-based, as in the S3-Rec files) is `sequences[u - 1]`.

  Attributes:
    name: dataset name, e.g. 'beauty'.
    sequences: one int32 array per user, oldest interaction first.
    num_items: size of the item vocabulary without padding.
    item_attributes: int32 [num_items + 1, A] attribute ids per item, padded
      with 0 (attribute ids are 1..num_attributes); row 0 is all zeros. None
      when the dataset has no attributes.
    num_attributes: number of distinct attribute ids (0 if none).
    item_text: num_items + 1 strings (index 0 is ''), or None.
    ratings: one float32 array per user aligned with `sequences`, or None.
    timestamps: one int64 array per user aligned with `sequences`, or None.
    sample_negatives: int32 [num_users, 99] negatives for the sampled
      evaluation protocol (`NAME_sample.txt`), or None.
    cold_items: items that occur only as test targets (a cold-start split
      made by `datasets.cold_start`), or None.
  """
  name: str
  sequences: list[np.ndarray]
  num_items: int
  item_attributes: np.ndarray | None = None
  num_attributes: int = 0
  item_text: list[str] | None = None
  ratings: list[np.ndarray] | None = None
  timestamps: list[np.ndarray] | None = None
  sample_negatives: np.ndarray | None = None
  cold_items: np.ndarray | None = None  # int32 ids held out of training
                                        # (datasets.cold_start), or None.

  @property
  def num_users(self) -> int:
    return len(self.sequences)

  @property
  def num_interactions(self) -> int:
    return int(sum(len(s) for s in self.sequences))
