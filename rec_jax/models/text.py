"""Item text inside the recommender: the adaptor that maps text embeddings
into the item space (UniSRec-style), and the config it is built from.

The text inputs (frozen embeddings, or the token states entering the tuned
top layers) are constants stored as parameters (rec_jax.peft.CONSTANT),
filled from the text encoder when a run starts (item_text.fill_params)
and saved with the model.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from rec_jax import text_encoder
from rec_jax.models import layers


class TextAdaptor(nnx.Module):
  """Item text -> item representations (UniSRec-style): a mixture of
  `experts` parametric whitening maps (x - b_k) W_k, mixed by a softmax gate
  on the text embedding x.

  Frozen text (`tune_layers=0`): x is `features` [V, text_dim], the items'
  text embeddings, a parameter that never trains (rec_jax.peft.CONSTANT):
  filled from the text encoder, saved with the model.

  Tuned text (`tune_layers=k`): the top k layers of the text encoder run
  inside the recommender on every item's token states entering them
  (`hidden` [V, T, text_dim] and `token_mask` [V, T], constants computed
  once by the frozen lower layers), followed by the encoder's mean pooling
  and L2 normalisation, so the k layers train end to end with the
  recommendation loss. At initialisation (pretrained layer weights) x equals
  the frozen features. `text_config` is the text model's config.json.
  `peft.lora_rank` > 0 puts LoRA adapters on the tuned layers' projections
  (finetune=lora then trains those, not the layers' weights).
  """

  def __init__(self, vocab: int, text_dim: int, dim: int, experts: int, *,
               rngs: nnx.Rngs, tune_layers: int = 0,
               text_config: dict | None = None, max_tokens: int = 0,
               peft: layers.Peft = layers.NO_PEFT):
    z = nnx.initializers.zeros_init()
    self.tune_layers = tune_layers
    if tune_layers:
      if not text_config or max_tokens <= 0:
        raise ValueError('model.text_tune_layers needs the text model config '
                         'and model.text_max_length > 0')
      if text_config['hidden_size'] != text_dim:
        raise ValueError(f'model.text_dim={text_dim} but the text model is '
                         f'{text_config["hidden_size"]}-d')
      self.hidden = layers.param(None, (vocab, max_tokens, text_dim),
                                 ('vocab', None, None), z)
      self.token_mask = layers.param(None, (vocab, max_tokens),
                                     ('vocab', None), z)
      self.layers = nnx.List([
          text_encoder.Layer(text_config, rngs=rngs,
                             lora_rank=peft.lora_rank,
                             lora_scale=peft.lora_scale)
          for _ in range(tune_layers)])
    else:
      self.features = layers.param(None, (vocab, text_dim), ('vocab', None),
                                   z)
    self.bias = layers.param(None, (experts, text_dim), (None, None), z)
    self.proj = layers.param(rngs.params(), (experts, text_dim, dim),
                             (None, None, 'embed'))
    self.gate = layers.param(None, (text_dim, experts), (None, None), z)

  def embeddings(self, dtype):
    """[V, text_dim] text embeddings of every table row."""
    if not self.tune_layers:
      return self.features[...].astype(dtype)
    mask = self.token_mask[...] > 0
    x = self.hidden[...].astype(dtype)
    for layer in self.layers:
      x = layer(x, mask)
    return text_encoder.mean_pool(x, mask).astype(dtype)

  def __call__(self, dtype):
    x = self.embeddings(dtype)
    gate = jax.nn.softmax((x @ self.gate[...].astype(dtype)).astype(
        jnp.float32), -1).astype(dtype)                       # [V, K]
    xw = jnp.einsum('vt,ktd->vkd', x, self.proj[...].astype(dtype))
    bw = jnp.einsum('kt,ktd->kd', self.bias[...].astype(dtype),
                    self.proj[...].astype(dtype))
    return jnp.einsum('vk,vkd->vd', gate, xw - bw[None])


def text_layers_in_use(model_cfg, text_config: dict | None = None) -> int:
  """How many text-encoder blocks the model reads (model.text_layers, or
  all of the text model's)."""
  if model_cfg.text_layers:
    return model_cfg.text_layers
  text_config = text_config or text_encoder.model_config(
      model_cfg.text_model)
  return text_config['num_hidden_layers']


def text_tuning_kwargs(model_cfg) -> dict:
  """Model arguments of `model.text_tune_layers` (none when 0)."""
  k = model_cfg.text_tune_layers
  if not k or not model_cfg.text_dim:
    return {}
  text_config = text_encoder.model_config(model_cfg.text_model)
  used = text_layers_in_use(model_cfg, text_config)
  if not 0 < k <= used:
    raise ValueError(f'model.text_tune_layers={k}: expected 1..{used} (the '
                     'text encoder layers in use)')
  return dict(text_tune_layers=k, text_config=text_config,
              text_max_tokens=model_cfg.text_max_length)


def encoder_kwargs(model_cfg) -> dict:
  """The item-text arguments of an encoder (`text_dim` 0: no text)."""
  m = model_cfg
  return dict(text_dim=m.text_dim, text_mode=m.text_mode,
              text_experts=m.text_experts, **text_tuning_kwargs(m))
