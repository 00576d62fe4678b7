"""``PackTBPSInputs``: the last transform of every TBPS pipeline.

It packs an item into ``docs/data_flow.md`` section 2: an ``inputs`` dict with
``img`` / ``text_ids`` / ``text_mask`` (``None`` for a modality the item does
not have, so that MMEngine's ``pseudo_collate`` sees the same keys in every
item of a mixed batch) and an MMPretrain ``DataSample``. Image formatting
reuses MMPretrain's ``PackInputs.format_input``.

Example:
    >>> import numpy as np
    >>> out = PackTBPSInputs()(dict(modality='text', text='a man',
    ...     text_ids=np.zeros(8, np.int64), text_mask=np.ones(8, np.int64),
    ...     gt_label=3, image_id=0, person_id=7, sample_idx=5))
    >>> out['inputs']['img'] is None, out['inputs']['text_ids'].shape
    (True, torch.Size([8]))
"""

from typing import Sequence

import torch
from mmcv.transforms import BaseTransform
from mmpretrain.datasets.transforms import PackInputs
from mmpretrain.structures import DataSample

from tbps_mm.registry import TRANSFORMS

from .sample_description import describe_sample

__all__ = ['PackTBPSInputs']


@TRANSFORMS.register_module()
class PackTBPSInputs(BaseTransform):
    """Pack image, token ids and labels for the data preprocessor.

    **Required keys:** ``img`` if the item has ``img_path``; ``text_ids`` and
    ``text_mask`` if it has ``text``; ``gt_label``.
    **Output:** ``dict(inputs=dict(img, text_ids, text_mask),
    data_samples=DataSample)``; the data sample holds ``gt_label`` and, in its
    metainfo, the ``meta_keys`` present in the item.

    Args:
        meta_keys (Sequence[str]): Item keys copied into the data sample's
            metainfo when present. Defaults to ``DEFAULT_META_KEYS``.

    Example:
        >>> PackTBPSInputs(meta_keys=('sample_idx', 'modality'))
        PackTBPSInputs(meta_keys=('sample_idx', 'modality'))
    """

    DEFAULT_META_KEYS = (
        'sample_idx',
        'image_id',
        'person_id',
        'modality',
        'img_path',
        'text',
        'caption_idx',
        'ori_shape',
        'img_shape',
        'scale_factor',
        'flip',
        'flip_direction',
        # SynthPedes families / oracle diagnostics (absent elsewhere).
        'family_id',
        'part_codes',
    )

    def __init__(self, meta_keys: Sequence[str] = DEFAULT_META_KEYS) -> None:
        self.meta_keys = tuple(meta_keys)

    def transform(self, results: dict) -> dict:
        """Pack ``results``.

        Args:
            results (dict): The pipeline item.

        Returns:
            dict: ``inputs`` and ``data_samples``.
        """
        img = None
        if results.get('img_path') is not None:
            if results.get('img') is None:
                raise KeyError(
                    f'PackTBPSInputs: {describe_sample(results)} has an image '
                    "path but no 'img': put LoadImageFromFile in the "
                    'ImagePipeline before PackTBPSInputs.'
                )
            img = PackInputs.format_input(results['img'])
        text_ids = text_mask = None
        if results.get('text') is not None:
            if results.get('text_ids') is None or results.get('text_mask') is None:
                raise KeyError(
                    f'PackTBPSInputs: {describe_sample(results)} has a caption '
                    "but no 'text_ids'/'text_mask': put TokenizeCaption before "
                    'PackTBPSInputs.'
                )
            text_ids = torch.as_tensor(results['text_ids'], dtype=torch.long)
            text_mask = torch.as_tensor(results['text_mask'], dtype=torch.long)

        data_sample = DataSample()
        if 'gt_label' in results:
            data_sample.set_gt_label(results['gt_label'])
        for key in self.meta_keys:
            if key in results:
                data_sample.set_field(results[key], key, field_type='metainfo')
        return dict(
            inputs=dict(img=img, text_ids=text_ids, text_mask=text_mask),
            data_samples=data_sample,
        )

    def __repr__(self) -> str:
        return f'{type(self).__name__}(meta_keys={self.meta_keys})'
