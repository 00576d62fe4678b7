"""ICFG-PEDES as published: ``imgs/`` and ``ICFG-PEDES.json``.

The annotation has the CUHK-PEDES fields (``split``, ``captions``,
``file_path``, ``processed_tokens``, ``id``) and only the train and test
splits: the field validates on ``test``, and asking for ``val`` is an error
that says so.

Example:
    >>> import tbps_mm
    >>> from tbps_mm.registry import DATASETS
    >>> ds = DATASETS.build(dict(type='ICFGPEDES', data_root='data/icfg_pedes',
    ...                          split='test'))
"""

from tbps_mm.registry import DATASETS

from .base_tbps_dataset import BaseTBPSDataset

__all__ = ['ICFGPEDES']


@DATASETS.register_module()
class ICFGPEDES(BaseTBPSDataset):
    """ICFG-PEDES (Ding et al., 2021): 4,102 ids, 54,522 images, one caption
    per image; splits train / test only.

    Args: see :class:`BaseTBPSDataset` (``ann_file`` defaults to
    ``'ICFG-PEDES.json'``, ``img_prefix`` to ``'imgs'``).

    Example:
        >>> ds = ICFGPEDES(data_root='data/icfg_pedes', split='val')
        Traceback (most recent call last):
        ValueError: ICFGPEDES: unknown split 'val'; ICFG-PEDES has the splits
        ['train', 'test']. ICFG-PEDES has no val split ...
    """

    DEFAULT_ANN_FILE = 'ICFG-PEDES.json'
    IMG_KEY = 'file_path'
    SPLITS = ('train', 'test')
    MISSING_SPLIT_HINTS = {
        'val': 'ICFG-PEDES has no val split (it is published with train and '
        "test only); validate on split='test', as the field does."
    }
    METAINFO = dict(dataset_name='ICFG-PEDES')
