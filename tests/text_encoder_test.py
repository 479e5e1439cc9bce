"""Our Flax BERT with the real all-MiniLM-L6-v2 weights reproduces the
reference sentence embeddings (../shared/notes/stack_probe.md, measured
against transformers' PyTorch BertModel)."""

import os

import numpy as np
import pytest

from rec_jax import text_encoder

SENTENCES = ['A man is eating food.', 'A man is eating a piece of bread.',
             'The girl is carrying a baby.', 'A man is riding a horse.']


@pytest.fixture(scope='module')
def encoder():
  return text_encoder.TextEncoder.pretrained()


def test_minilm_matches_reference_values(encoder):
  v = encoder.embed(SENTENCES, batch_size=4)
  assert v.shape == (4, 384) and v.dtype == np.float32
  np.testing.assert_allclose(
      v[0, :8], [0.0332, 0.0044, -0.0063, 0.0484, -0.1387, -0.0336, 0.1011,
                 -0.0544], atol=6e-5)
  assert np.linalg.norm(v, axis=1) == pytest.approx(np.ones(4), abs=1e-5)
  assert float(v[0] @ v[1]) == pytest.approx(0.7553, abs=2e-4)
  assert float(v[0] @ v[2]) == pytest.approx(-0.105, abs=2e-4)
  assert float(v[0] @ v[3]) == pytest.approx(0.2474, abs=2e-4)


def test_batching_and_order_do_not_change_embeddings(encoder):
  texts = SENTENCES + ['a' * 300, 'b']  # one truncated, one short
  one = encoder.embed(texts, batch_size=2)
  rev = encoder.embed(texts[::-1], batch_size=64)[::-1]
  np.testing.assert_allclose(one, rev, atol=1e-5)


def test_bad_weights_and_folders_are_named(tmp_path, encoder):
  from safetensors import numpy as st  # pylint: disable=g-import-not-at-top
  bad = tmp_path / 'bad.safetensors'
  st.save_file({'embeddings.word_embeddings.weight': np.zeros((2, 2),
                                                              np.float32),
                'surprise.weight': np.zeros(1, np.float32)}, str(bad))
  with pytest.raises(text_encoder.TextModelError,
                     match="checkpoint has, model does not use: "
                     r"\['surprise.weight'\]"):
    text_encoder.load_weights(encoder.model, str(bad), 6)
  with pytest.raises(text_encoder.TextModelError, match='missing config'):
    text_encoder.model_dir(str(tmp_path))
  assert os.path.exists(os.path.join(encoder.folder, 'model.safetensors'))
