"""CUHK-PEDES as published: ``imgs/`` and ``reid_raw.json``.

``reid_raw.json`` is a list of ``{split, captions, file_path,
processed_tokens, id}`` entries (ids start at 1; splits train / val / test);
``file_path`` is relative to ``imgs/``. ``processed_tokens`` is not used: the
pipeline tokenizes the raw captions.

Example:
    >>> import tbps_mm
    >>> from tbps_mm.registry import DATASETS
    >>> ds = DATASETS.build(dict(type='CUHKPEDES', data_root='data/cuhk_pedes',
    ...                          split='train'))
"""

from tbps_mm.registry import DATASETS

from .base_tbps_dataset import BaseTBPSDataset

__all__ = ['CUHKPEDES']


@DATASETS.register_module()
class CUHKPEDES(BaseTBPSDataset):
    """CUHK-PEDES (Li et al., CVPR 2017): 13,003 ids, 40,206 images, 80,412
    captions; splits train / val / test.

    Args: see :class:`BaseTBPSDataset` (``ann_file`` defaults to
    ``'reid_raw.json'``, ``img_prefix`` to ``'imgs'``).

    Example:
        >>> ds = CUHKPEDES(data_root='data/cuhk_pedes', split='test')
        >>> ds.get_queries()[0]['text']
        'The man has short, dark hair and wears khaki pants ...'
    """

    DEFAULT_ANN_FILE = 'reid_raw.json'
    IMG_KEY = 'file_path'
    SPLITS = ('train', 'val', 'test')
    METAINFO = dict(dataset_name='CUHK-PEDES')
