"""RSTPReid as published: ``imgs/`` and ``data_captions.json``.

``data_captions.json`` is a list of ``{id, img_path, captions, split}``
entries (splits train / val / test); ``img_path`` is relative to ``imgs/``.

Example:
    >>> import tbps_mm
    >>> from tbps_mm.registry import DATASETS
    >>> ds = DATASETS.build(dict(type='RSTPReid', data_root='data/rstpreid',
    ...                          split='val'))
"""

from tbps_mm.registry import DATASETS

from .base_tbps_dataset import BaseTBPSDataset

__all__ = ['RSTPReid']


@DATASETS.register_module()
class RSTPReid(BaseTBPSDataset):
    """RSTPReid (Zhu et al., ACM MM 2021): 4,101 ids, 20,505 images, two
    captions per image; splits train / val / test.

    Args: see :class:`BaseTBPSDataset` (``ann_file`` defaults to
    ``'data_captions.json'``, ``img_prefix`` to ``'imgs'``; the image path
    is read from the ``img_path`` field).

    Example:
        >>> ds = RSTPReid(data_root='data/rstpreid', split='test')
        >>> ds.get_gallery()[0].keys()
        dict_keys(['img_path', 'gt_label', 'image_id', 'person_id', 'sample_idx'])
    """

    DEFAULT_ANN_FILE = 'data_captions.json'
    IMG_KEY = 'img_path'
    SPLITS = ('train', 'val', 'test')
    METAINFO = dict(dataset_name='RSTPReid')
