"""Helpers the benchmark scripts share: the repository root, mean ± std
formatting and a headless matplotlib."""

import os

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def mean_std(values, digits: int = 4) -> str:
  """'m' for one value, 'm ± s' (sample std) for several."""
  v = np.asarray(values, np.float64)
  if v.size == 1:
    return f'{v.reshape(-1)[0]:.{digits}f}'
  return f'{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}'


def pyplot():
  """matplotlib.pyplot with the file-only Agg backend."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt
