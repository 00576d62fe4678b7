"""What the training-cost benchmarks share: the models they build and time.

``train_step_cost.py`` (CPU, the quick-start and the reference CLIP model) and
``gpu_reference_model.py`` (the reference CLIP model on a GPU) time the same
variants of the same configs:

- :data:`MODELS_TO_RUN`: the config of each model, and the config that
  defines its global-only baseline (the baseline is never re-created here);
- :func:`load_config` / :func:`variant_cfg`: a model's config, random init,
  and the model config of one variant (``global-only``, ``parts``, ``full``);
- :func:`build_model` / :func:`build_optim_wrapper`: built as the Runner
  builds them;
- :func:`synthetic_batch`: a collated training batch in the data loader's
  format, for models whose dataset is not at hand.

Example:
    >>> cfg = load_config('synth')
    >>> model = build_model(variant_cfg(cfg, 'global-only'), 'cpu')
"""

import os.path as osp
from typing import Optional, Sequence

import torch

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))

#: The CLIP text transformer of ViT-B/16 (transformers CLIPTextConfig kwargs).
CLIP_TEXT_B = dict(
    vocab_size=49408,
    hidden_size=512,
    intermediate_size=2048,
    num_hidden_layers=12,
    num_attention_heads=8,
    max_position_embeddings=77,
    hidden_act='quick_gelu',
    bos_token_id=49406,
    eos_token_id=49407,
    pad_token_id=0,
)

#: name -> config file, the config of its global-only model, default batch,
#: default variants.
MODELS_TO_RUN = {
    'synth': dict(
        config='configs/tbps_synth.py',
        global_config='configs/ablations/synth_global.py',
        batch=64,
        variants=('global-only', 'parts', 'full'),
    ),
    'clip-b16': dict(
        config='configs/tbps_cuhk.py',
        global_config='configs/_base_/models/global_vit-b16_clip.py',
        batch=8,
        variants=('global-only', 'full'),
    ),
}
VARIANTS = ('global-only', 'parts', 'full')


def load_config(name: str, cfg_options: Optional[dict] = None):
    """The config of ``name`` (see :data:`MODELS_TO_RUN`), random init.

    For ``clip-b16`` the pretrained-weight paths are dropped (random init) and
    the text encoder is built from :data:`CLIP_TEXT_B` instead of a folder.

    Args:
        name (str): A key of :data:`MODELS_TO_RUN`.
        cfg_options (dict, optional): ``--cfg-options`` overrides, merged
            into the model's config and its global-only config alike (e.g.
            ``model.head.num_layers=1``).

    Returns:
        mmengine.Config: With ``model``, ``optim_wrapper`` and
        ``global_model`` (the global-only config's model).
    """
    from mmengine.config import Config

    import tbps_mm  # noqa: F401  (registers the components)

    files = MODELS_TO_RUN[name]
    cfg = Config.fromfile(osp.join(REPO_ROOT, files['config']))
    global_cfg = Config.fromfile(osp.join(REPO_ROOT, files['global_config']))
    for one in (cfg, global_cfg):
        if name == 'clip-b16':
            one.model.image_encoder.init_cfg = None
            one.model.head.init_cfg = None
            one.model.text_encoder = dict(type='CLIPTextEncoder', config=CLIP_TEXT_B)
        if cfg_options:
            one.merge_from_dict(cfg_options)
    cfg.global_model = global_cfg.model
    return cfg


def variant_cfg(cfg, variant: str):
    """The model config of one variant.

    ``full`` is the config's model, ``global-only`` the model of its
    global-only config, ``parts`` the full model with every loss on part
    outputs switched off (the part decoder's own cost).

    Args:
        cfg (Config): From :func:`load_config`.
        variant (str): ``'global-only'``, ``'parts'`` or ``'full'``.

    Returns:
        ConfigDict: A deep copy.
    """
    from tbps_mm.registry import MODELS

    if variant not in VARIANTS:
        raise ValueError(f'unknown variant {variant!r}; choose from {VARIANTS}')
    if variant == 'global-only':
        return cfg.global_model.deepcopy()
    model_cfg = cfg.model.deepcopy()
    if variant == 'full':
        return model_cfg
    for name, loss in list(model_cfg.losses.items()):
        if loss is None:
            continue
        default = getattr(MODELS.get(loss['type']), 'input_key', 'embed')
        if loss.get('input_key', default) != 'embed':
            model_cfg.losses[name] = None  # a loss on part outputs
    return model_cfg


def build_model(model_cfg, device: str) -> torch.nn.Module:
    """Build a model from its config (``tbps_mm.apis.init_model``), initialise
    it and move it to ``device``, in training mode."""
    from mmengine.config import Config

    from tbps_mm.apis import init_model

    model = init_model(Config(dict(model=model_cfg, default_scope='tbps_mm')))
    model.init_weights()
    return model.to(device).train()


def build_optim_wrapper(model: torch.nn.Module, optim_cfg, device: str):
    """The config's optimizer wrapper; ``AmpOptimWrapper`` becomes a plain
    ``OptimWrapper`` off the GPU (MMEngine's AMP wrapper needs CUDA).

    A variant without some modules of the config's model (global-only has no
    part decoder) drops the lr multipliers of those modules, with a note:
    the config's constructor rejects a key that matches no parameter.
    """
    from mmengine.optim import build_optim_wrapper as mm_build

    from tbps_mm.engine import parameter_names

    cfg = optim_cfg.deepcopy()
    keys = cfg.get('paramwise_cfg', {}).get('custom_keys', {})
    names = parameter_names(model)
    absent = [k for k in keys if not any(k in n for n in names)]
    for key in absent:
        keys.pop(key)
    if absent:
        print(
            f'{type(model).__name__} variant: no {", ".join(absent)}; '
            'their lr multipliers are dropped'
        )
    if cfg.get('type') == 'AmpOptimWrapper' and not device.startswith('cuda'):
        cfg.type = 'OptimWrapper'
        cfg.pop('loss_scale', None)
        cfg.pop('dtype', None)
    return mm_build(model, cfg)


def synthetic_batch(
    batch: int,
    img_hw: Sequence[int],
    text_len: int,
    vocab: int,
    num_classes: int,
    eos_token_id: Optional[int] = None,
    seed: int = 0,
) -> dict:
    """A collated training batch like the data loader's (``pseudo_collate``).

    Args:
        batch (int): Image-caption pairs.
        img_hw (Sequence[int]): (H, W).
        text_len (int): Padded caption length L.
        vocab (int): Token ids are drawn in [1, vocab).
        num_classes (int): Labels are drawn in [0, num_classes).
        eos_token_id (int, optional): Put at the end of every caption (CLIP
            pools at its end-of-text token).
        seed (int): Seed.

    Returns:
        dict: ``inputs`` (``img`` / ``text_ids`` / ``text_mask`` lists) and
        ``data_samples`` (DataSample with ``gt_label``), as in
        docs/data_flow.md section 2.

    Example:
        >>> data = synthetic_batch(2, (96, 32), 10, 50, 5)
        >>> data['inputs']['img'][0].dtype
        torch.uint8
    """
    from mmpretrain.structures import DataSample

    gen = torch.Generator().manual_seed(seed)
    h, w = img_hw
    imgs = torch.randint(0, 256, (batch, 3, h, w), generator=gen, dtype=torch.uint8)
    ids = torch.randint(1, vocab, (batch, text_len), generator=gen)
    lengths = torch.randint(text_len // 2, text_len + 1, (batch,), generator=gen)
    mask = (torch.arange(text_len)[None, :] < lengths[:, None]).long()
    if eos_token_id is not None:
        ids[torch.arange(batch), lengths - 1] = eos_token_id
    ids = ids * mask
    labels = torch.randint(0, num_classes, (batch,), generator=gen)
    samples = []
    for i in range(batch):
        sample = DataSample().set_gt_label(int(labels[i]))
        sample.set_metainfo(dict(sample_idx=i, image_id=i, modality='pair'))
        samples.append(sample)
    return dict(
        inputs=dict(img=list(imgs), text_ids=list(ids), text_mask=list(mask)),
        data_samples=samples,
    )
