"""The base class of every text-based person search dataset.

A TBPS annotation file is a JSON list with one entry per image: the person id,
the split, the image path relative to the image folder and the image's
captions. :class:`BaseTBPSDataset` reads such a file and turns one split of it
into the items of ``docs/data_flow.md`` section 1:

- ``train``: one ``modality='pair'`` item per (image, caption);
- ``val`` / ``test``: one ``modality='image'`` item per image (the gallery),
  followed by one ``modality='text'`` item per caption (the queries).

Person ids are re-indexed to ``gt_label`` 0..N-1 over the split, sorted by the
original id, so that gallery and query labels agree. Subclasses only say where
the annotation is, which key holds the image path and which splits exist.

The annotation checks (:meth:`BaseTBPSDataset.find_problems`) are shared by the
loader, which raises on the first problem, and by
``tools/dataset_converters/check_dataset.py``, which reports all of them.
MMEngine's ``BaseDataset`` offers serialisation, lazy init and subsets but no
parser for this format, so the parsing and checking here are hand-written.

Example:
    >>> import tbps_mm
    >>> from tbps_mm.registry import DATASETS
    >>> ds = DATASETS.build(dict(type='CUHKPEDES', data_root='data/cuhk_pedes',
    ...                          split='test'))
    >>> len(ds.get_gallery()), len(ds.get_queries())
    (3074, 6156)
"""

import json
import logging
import os.path as osp
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import mmcv
import numpy as np
from mmengine.dataset import BaseDataset, force_full_init
from mmengine.fileio import get as fileio_get
from mmengine.fileio import join_path
from mmengine.logging import print_log
from mmengine.utils import ProgressBar

from tbps_mm.registry import TRANSFORMS

__all__ = ['BaseTBPSDataset']


class BaseTBPSDataset(BaseDataset):
    """Read one split of a TBPS annotation file (CUHK-PEDES family format).

    Args:
        data_root (str): The dataset folder. ``ann_file`` and ``img_prefix``
            are relative to it unless absolute.
        split (str): ``'train'``, ``'val'`` or ``'test'`` (see ``SPLITS``).
        ann_file (str, optional): The annotation JSON. Defaults to the
            class's ``DEFAULT_ANN_FILE``.
        img_prefix (str): The image folder the image paths of the annotation
            are relative to. Defaults to ``'imgs'``.
        pipeline (Sequence[dict | Callable]): The data pipeline.
        skip_bad_samples (bool): Drop, at load time, the empty captions and
            the entries whose image file is missing or empty (and the entries
            left without captions), count them and log the counts. When False
            (the default), nothing is dropped: an empty caption is an error
            when the annotation is loaded and a missing image when its sample
            is loaded.
        test_mode (bool, optional): As in MMEngine's ``BaseDataset`` (a
            pipeline that returns ``None`` is an error instead of a cue to
            fetch another sample). Defaults to ``split != 'train'``.
        lazy_init (bool): Defer reading the annotation until it is first
            needed (``full_init``). Defaults to False.
        **kwargs: Other ``BaseDataset`` arguments (``metainfo``, ``indices``,
            ``serialize_data``, ``max_refetch``).

    Example:
        >>> ds = CUHKPEDES(data_root='data/cuhk_pedes', split='train')
        >>> ds.get_data_info(0)['modality']
        'pair'
    """

    #: File name of the annotation JSON under ``data_root``.
    DEFAULT_ANN_FILE: str = 'reid_raw.json'
    #: The entry field that holds the image path.
    IMG_KEY: str = 'file_path'
    #: The splits the published annotation has.
    SPLITS: Tuple[str, ...] = ('train', 'val', 'test')
    #: Extra lines for the error raised when a split is not in ``SPLITS``.
    MISSING_SPLIT_HINTS: Dict[str, str] = {}
    METAINFO: dict = dict(dataset_name='TBPS')

    def __init__(
        self,
        data_root: str,
        split: str = 'train',
        ann_file: Optional[str] = None,
        img_prefix: str = 'imgs',
        pipeline: Sequence[Union[dict, Callable]] = (),
        skip_bad_samples: bool = False,
        test_mode: Optional[bool] = None,
        lazy_init: bool = False,
        **kwargs,
    ) -> None:
        name = self.METAINFO.get('dataset_name', type(self).__name__)
        if split not in self.SPLITS:
            hint = self.MISSING_SPLIT_HINTS.get(split, '')
            raise ValueError(
                f'{type(self).__name__}: unknown split {split!r}; {name} has '
                f'the splits {list(self.SPLITS)}.' + (f' {hint}' if hint else '')
            )
        if not data_root:
            raise ValueError(f'{type(self).__name__}: data_root must be given.')
        self.split = split
        self.skip_bad_samples = skip_bad_samples
        self.img_prefix = img_prefix
        if test_mode is None:
            test_mode = split != 'train'
        super().__init__(
            ann_file=ann_file or self.DEFAULT_ANN_FILE,
            data_root=data_root,
            data_prefix=dict(img_path=img_prefix),
            pipeline=[_build_transform(t) for t in pipeline],
            test_mode=test_mode,
            lazy_init=lazy_init,
            **kwargs,
        )

    # ------------------------------------------------------------------ reading
    def read_annotation(self) -> list:
        """Read the annotation file and check that it holds a JSON list.

        Returns:
            list: The raw entries.

        Raises:
            FileNotFoundError: The file does not exist.
            ValueError: The file is not valid JSON.
            TypeError: The JSON is not a list.
        """
        path = self.ann_file
        if not osp.isfile(path):
            raise FileNotFoundError(
                f'{type(self).__name__}: annotation file {path!r} not found '
                f'(data_root={self.data_root!r}, ann_file default '
                f'{self.DEFAULT_ANN_FILE!r}). See docs/datasets.md for the '
                'expected folder layout.'
            )
        try:
            with open(path, encoding='utf-8') as f:
                records = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f'{path}: not a valid JSON annotation file ({e}).') from e
        if not isinstance(records, list):
            raise TypeError(
                f'{path}: the annotation must be a JSON list of entries (one '
                f'per image), got a {type(records).__name__}.'
            )
        return records

    def entry_problems(self, entry, index: int) -> List[str]:
        """List what is malformed in one raw annotation entry.

        Empty captions are not reported here (see :meth:`empty_captions`):
        ``skip_bad_samples`` may drop them, while a malformed entry is always
        an error.

        Args:
            entry: The raw entry.
            index (int): Its position in the annotation list.

        Returns:
            list[str]: One message per problem, each naming the file, the
            entry index and the field; empty when the entry is well formed.
        """
        where = f'{self.ann_file}: entry {index}'
        if not isinstance(entry, dict):
            return [f'{where}: expected a JSON object, got {type(entry).__name__}']
        problems = []
        for field in ('id', 'split', self.IMG_KEY, 'captions'):
            if field not in entry:
                problems.append(f'{where}: missing field {field!r}')
        pid = entry.get('id')
        if 'id' in entry and (isinstance(pid, bool) or not isinstance(pid, int)):
            problems.append(
                f"{where}: field 'id' must be an integer person id, got {pid!r}"
            )
        split = entry.get('split')
        if 'split' in entry and split not in self.SPLITS:
            problems.append(
                f"{where}: field 'split' is {split!r}, expected one of "
                f'{list(self.SPLITS)}'
            )
        img = entry.get(self.IMG_KEY)
        if self.IMG_KEY in entry and (not isinstance(img, str) or not img):
            problems.append(
                f'{where}: field {self.IMG_KEY!r} must be a non-empty image '
                f'path, got {img!r}'
            )
        captions = entry.get('captions')
        if 'captions' in entry:
            if not isinstance(captions, list) or not captions:
                problems.append(
                    f"{where}: field 'captions' must be a non-empty list of "
                    f'strings, got {captions!r}'
                )
            else:
                for i, caption in enumerate(captions):
                    if not isinstance(caption, str):
                        problems.append(
                            f"{where}: field 'captions'[{i}] must be a string, "
                            f'got {type(caption).__name__}'
                        )
        return problems

    @staticmethod
    def empty_captions(entry: dict) -> List[int]:
        """Indices of the captions of a well-formed entry that are blank."""
        return [i for i, c in enumerate(entry['captions']) if not c.strip()]

    def image_path(self, entry: dict) -> str:
        """The image path of a well-formed entry, joined with the prefix."""
        return join_path(self.data_prefix['img_path'], entry[self.IMG_KEY])

    # ------------------------------------------------------------------ loading
    def load_data_list(self) -> List[dict]:
        """Parse the split into items (``docs/data_flow.md`` section 1).

        Returns:
            list[dict]: Pairs for ``train``; gallery then queries otherwise.
        """
        records = self.read_annotation()
        split_stats = {s: [set(), 0, 0] for s in self.SPLITS}  # ids, imgs, caps
        images = []  # (person_id, img_path, captions) of the selected split
        dropped = dict(captions=0, missing_images=0, captionless_entries=0)
        for index, entry in enumerate(records):
            problems = self.entry_problems(entry, index)
            if problems:
                raise ValueError('; '.join(problems))
            stats = split_stats[entry['split']]
            stats[0].add(entry['id'])
            stats[1] += 1
            stats[2] += len(entry['captions'])
            if entry['split'] != self.split:
                continue
            captions = entry['captions']
            img_path = self.image_path(entry)
            empty = self.empty_captions(entry)
            if empty and not self.skip_bad_samples:
                raise ValueError(
                    f'{self.ann_file}: entry {index} ({entry[self.IMG_KEY]}): '
                    f'caption {empty[0]} is empty. Fix the annotation or set '
                    'skip_bad_samples=True to drop empty captions.'
                )
            if self.skip_bad_samples:
                if not _is_nonempty_file(img_path):
                    dropped['missing_images'] += 1
                    continue
                captions = [c for i, c in enumerate(captions) if i not in empty]
                dropped['captions'] += len(empty)
                if not captions:
                    dropped['captionless_entries'] += 1
                    continue
            images.append((entry['id'], img_path, captions))

        data_list = self._build_items(images)
        self._update_metainfo(images)
        self._log_summary(split_stats, images, data_list, dropped)
        return data_list

    def _build_items(self, images: List[tuple]) -> List[dict]:
        """Turn ``(person_id, img_path, captions)`` triples into items."""
        person_ids = np.array([pid for pid, _, _ in images], dtype=np.int64)
        # gt_label: rank of the original id among the split's sorted ids.
        _, labels = np.unique(person_ids, return_inverse=True)
        labels = labels.reshape(-1).tolist()
        if self.split == 'train':
            return [
                dict(
                    modality='pair',
                    img_path=img_path,
                    text=caption,
                    gt_label=labels[image_id],
                    image_id=image_id,
                    person_id=pid,
                    caption_idx=caption_idx,
                )
                for image_id, (pid, img_path, captions) in enumerate(images)
                for caption_idx, caption in enumerate(captions)
            ]
        gallery = [
            dict(
                modality='image',
                img_path=img_path,
                gt_label=labels[image_id],
                image_id=image_id,
                person_id=pid,
            )
            for image_id, (pid, img_path, _) in enumerate(images)
        ]
        queries = [
            dict(
                modality='text',
                text=caption,
                gt_label=labels[image_id],
                image_id=image_id,
                person_id=pid,
                caption_idx=caption_idx,
            )
            for image_id, (pid, _, captions) in enumerate(images)
            for caption_idx, caption in enumerate(captions)
        ]
        return gallery + queries

    def _update_metainfo(self, images: List[tuple]) -> None:
        """Record the split's sizes in the metainfo (e.g. for an ID head)."""
        self._metainfo.update(
            split=self.split,
            num_ids=len({pid for pid, _, _ in images}),
            num_images=len(images),
            num_captions=sum(len(c) for _, _, c in images),
        )

    def _log_summary(
        self, split_stats: dict, images: list, data_list: list, dropped: dict
    ) -> None:
        """Log the ids / images / captions table and what was dropped."""
        name = self.METAINFO.get('dataset_name', type(self).__name__)
        lines = [
            f'{name} ({self.ann_file}), split {self.split!r} loaded: '
            f'{len(data_list)} items',
            f'{"split":<8}{"ids":>8}{"images":>10}{"captions":>10}',
        ]
        for split, (ids, n_img, n_cap) in split_stats.items():
            mark = '  <- loaded' if split == self.split else ''
            lines.append(f'{split:<8}{len(ids):>8}{n_img:>10}{n_cap:>10}{mark}')
        if self.skip_bad_samples:
            kept_ids = len({pid for pid, _, _ in images})
            kept_caps = sum(len(c) for _, _, c in images)
            lines.append(f'{"kept":<8}{kept_ids:>8}{len(images):>10}{kept_caps:>10}')
        print_log('\n'.join(lines), logger='current')
        if self.skip_bad_samples:
            print_log(
                f'{name} split {self.split!r}: skip_bad_samples dropped '
                f'{dropped["missing_images"]} entries with a missing or empty '
                f'image, {dropped["captions"]} empty captions and '
                f'{dropped["captionless_entries"]} entries left without '
                'captions.',
                logger='current',
                level=logging.WARNING if any(dropped.values()) else logging.INFO,
            )

    # --------------------------------------------------------------- accessors
    @force_full_init
    def get_gallery(self) -> List[dict]:
        """The images of the split, one per image.

        Returns:
            list[dict]: ``img_path``, ``gt_label``, ``image_id``,
            ``person_id`` and ``sample_idx`` (the dataset index that carries
            the image; for ``train`` the first pair of the image).
        """
        gallery, seen = [], set()
        for idx in range(len(self)):
            info = self.get_data_info(idx)
            if info['modality'] == 'text' or info['image_id'] in seen:
                continue
            seen.add(info['image_id'])
            gallery.append(
                {
                    k: info[k]
                    for k in (
                        'img_path',
                        'gt_label',
                        'image_id',
                        'person_id',
                        'sample_idx',
                    )
                }
            )
        return gallery

    @force_full_init
    def get_queries(self) -> List[dict]:
        """The captions of the split, one per caption.

        Returns:
            list[dict]: ``text``, ``gt_label``, ``image_id`` (of the image the
            caption describes), ``person_id`` and ``sample_idx``.
        """
        return [
            {
                k: info[k]
                for k in ('text', 'gt_label', 'image_id', 'person_id', 'sample_idx')
            }
            for info in map(self.get_data_info, range(len(self)))
            if info['modality'] != 'image'
        ]

    @force_full_init
    def get_cat_ids(self, idx: int) -> List[int]:
        """The label of item ``idx`` (lets MMEngine's class-balanced wrappers
        work on TBPS datasets)."""
        return [self.get_data_info(idx)['gt_label']]

    # ---------------------------------------------------------------- checking
    def find_problems(
        self,
        splits: Optional[Sequence[str]] = None,
        check_images: bool = True,
        decode_images: bool = True,
        progress: bool = False,
    ) -> List[str]:
        """Report every bad entry of the annotation instead of the first.

        Args:
            splits (Sequence[str], optional): Check only these splits (the
                malformed-entry check always covers the whole file). Defaults
                to every split.
            check_images (bool): Check that each image file exists and is not
                empty. Defaults to True.
            decode_images (bool): Also decode each image (slower, finds
                truncated or non-image files). Defaults to True.
            progress (bool): Show a progress bar over the images.

        Returns:
            list[str]: One message per problem (file, entry index, field or
            image path, what is wrong); empty when the annotation is clean.
            A missing, non-JSON or non-list annotation file is a single
            problem.
        """
        try:
            records = self.read_annotation()
        except (FileNotFoundError, ValueError, TypeError) as e:
            return [str(e)]
        splits = tuple(splits) if splits else self.SPLITS
        problems: List[str] = []
        to_check: List[Tuple[int, str]] = []
        for index, entry in enumerate(records):
            entry_problems = self.entry_problems(entry, index)
            problems.extend(entry_problems)
            if entry_problems or entry['split'] not in splits:
                continue
            for i in self.empty_captions(entry):
                problems.append(
                    f'{self.ann_file}: entry {index} ({entry[self.IMG_KEY]}): '
                    f"field 'captions'[{i}] is empty"
                )
            to_check.append((index, self.image_path(entry)))
        if check_images:
            bar = ProgressBar(len(to_check)) if progress and to_check else None
            for index, path in to_check:
                error = _image_problem(path, decode_images)
                if error:
                    problems.append(
                        f'{self.ann_file}: entry {index}: image {path!r} {error}'
                    )
                if bar is not None:
                    bar.update()
        return problems

    def __repr__(self) -> str:
        state = f'{len(self)} items' if self._fully_initialized else 'not loaded yet'
        return (
            f'{type(self).__name__}(data_root={self.data_root!r}, '
            f'split={self.split!r}, ann_file={self.ann_file!r}, '
            f'img_prefix={self.img_prefix!r}, {state})'
        )


def _build_transform(transform: Union[dict, Callable]) -> Callable:
    """Build a transform config in tbps_mm's registry (so that tbps_mm's and
    MMPretrain's transforms resolve without a default scope, as in
    MMPretrain's datasets)."""
    return TRANSFORMS.build(transform) if isinstance(transform, dict) else transform


def _is_nonempty_file(path: str) -> bool:
    """True when ``path`` is a file with at least one byte."""
    return osp.isfile(path) and osp.getsize(path) > 0


def _image_problem(path: str, decode: bool) -> Optional[str]:
    """Say what is wrong with an image file, or None if it is usable."""
    if not osp.isfile(path):
        return 'does not exist'
    if osp.getsize(path) == 0:
        return 'is empty'
    if decode:
        try:
            img = mmcv.imfrombytes(fileio_get(path))
        except Exception as e:  # noqa: BLE001 - any decoder failure is a finding
            return f'cannot be decoded ({type(e).__name__}: {e})'
        if img is None:
            return 'cannot be decoded as an image'
    return None
