"""Tiny model configs and tensor inputs for the model tests.

Everything is random and small (a 2-layer ViT on 96x32 images, a 1-layer
BERT, a 4-query head), so a forward + backward pass takes milliseconds; the
inputs follow docs/data_flow.md section 3.

Example:
    >>> model = MODELS.build(tiny_retriever_cfg())
    >>> inputs, samples = pair_batch(4)
    >>> model(inputs, samples, mode='loss').keys()
"""

import copy
from typing import List, Tuple

import torch
from mmpretrain.structures import DataSample

VOCAB = 50
IMG_HW = (96, 32)
EMBED = 24
NUM_PARTS = 4
NUM_CLASSES = 5
TEXT_LEN = 10

_CFG = dict(
    type='TBPSRetriever',
    data_preprocessor=dict(type='TBPSDataPreprocessor'),
    image_encoder=dict(
        type='VisionTransformer',
        arch=dict(embed_dims=48, num_layers=2, num_heads=4, feedforward_channels=96),
        img_size=IMG_HW,
        patch_size=16,
        pre_norm=True,
        out_type='raw',
    ),
    text_encoder=dict(
        type='BertTextEncoder',
        config=dict(
            vocab_size=VOCAB,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=32,
        ),
    ),
    head=dict(
        type='PartQueryDecoderHead',
        image_in_channels=48,
        text_in_channels=32,
        embed_dims=EMBED,
        num_parts=NUM_PARTS,
        decoder_dims=32,
        num_layers=2,
        num_heads=4,
    ),
    losses=dict(
        sdm=dict(type='SDMLoss'),
        id=dict(type='IDLoss', in_channels=EMBED, num_classes=NUM_CLASSES),
        cmr=dict(type='CommonalityMarginRankingLoss'),
    ),
    fusion_weight=0.5,
)


def _merge(base: dict, overrides: dict) -> dict:
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def tiny_retriever_cfg(**overrides) -> dict:
    """The tiny model config with ``overrides`` merged in recursively."""
    return _merge(copy.deepcopy(_CFG), overrides)


def captions(batch: int, seed: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """(B, L) token ids ([CLS]=2 ... [SEP]=3, [PAD]=0) of varied lengths."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (batch, TEXT_LEN), generator=gen)
    lengths = torch.arange(batch) % (TEXT_LEN - 4) + 4
    mask = (torch.arange(TEXT_LEN)[None] < lengths[:, None]).long()
    ids[:, 0] = 2
    ids[torch.arange(batch), lengths - 1] = 3
    return ids * mask, mask


def images(batch: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, *IMG_HW, generator=gen)


def pair_batch(batch: int = 6, seed: int = 0) -> Tuple[dict, List[DataSample]]:
    """A training batch: every sample an image-caption pair, 3 identities."""
    ids, mask = captions(batch, seed)
    inputs = dict(
        images=images(batch, seed),
        image_index=torch.arange(batch),
        text_ids=ids,
        text_mask=mask,
        text_index=torch.arange(batch),
    )
    samples = [DataSample().set_gt_label(i % 3) for i in range(batch)]
    return inputs, samples
