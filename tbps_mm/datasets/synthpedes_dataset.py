"""``SynthPedes``: the CUHK-PEDES loader over tbps_mm's own procedural data.

SynthPedes is written in the CUHK-PEDES layout (``imgs/`` + ``reid_raw.json``),
so the class is :class:`CUHKPEDES` plus one step before the annotation is
read: if ``data_root`` does not hold a complete SynthPedes, it is generated
there with ``tbps_mm.datasets.synthpedes.generate_synthpedes`` (on rank 0; the
other ranks wait at a barrier). A complete SynthPedes made with another size
or seed is an error, never silently reused or overwritten; a folder holding
something else is refused by the generator. See ``docs/synthpedes.md``.

Example:
    >>> import tbps_mm
    >>> from tbps_mm.registry import DATASETS
    >>> ds = DATASETS.build(dict(type='SynthPedes',
    ...     data_root='data/synthpedes_tiny', size='tiny', seed=0, split='test'))
"""

import json
import logging
import os.path as osp
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
from mmengine.dist import barrier, get_dist_info
from mmengine.logging import print_log

from tbps_mm.registry import DATASETS

from . import synthpedes as synthpedes_generator
from .cuhk_pedes import CUHKPEDES

__all__ = ['SynthPedes']


@DATASETS.register_module()
class SynthPedes(CUHKPEDES):
    """CUHK-PEDES semantics over SynthPedes, generated on first use.

    Args:
        data_root (str): Where SynthPedes lives or is generated.
        split (str): ``'train'``, ``'val'`` or ``'test'``.
        size (str): The generator's size preset (``'tiny'``, ``'small'``,
            ``'large'``). Defaults to ``'small'``.
        seed (int): The generator's seed. Defaults to 0.
        num_ids (int, optional): Override the preset's number of identities.
        images_per_id (int, optional): Override the preset's images per id.
        image_size (Sequence[int], optional): ``(H, W)`` of generated crops;
            None keeps the generator's default.
        workers (int, optional): Generator processes; None lets it choose.
        families (int, optional): The families variant with this many people
            per family (docs/synthpedes.md, "Families"); every item then
            carries ``family_id`` (the family index of attributes.json),
            which the family batch sampler and the within-family metric read.
            None (default) asks for the standard dataset.
        with_part_codes (bool): Add ``part_codes`` to every item: an int64
            array with one code per body part of ``BODY_PARTS`` (equal codes
            = the same values of all that part's attributes). For the oracle
            commonality diagnostic only; defaults to False.
        **kwargs: :class:`BaseTBPSDataset` arguments (``pipeline``,
            ``ann_file``, ``img_prefix``, ``skip_bad_samples``, ``test_mode``,
            ``lazy_init``, ...).

    Example:
        >>> ds = SynthPedes(data_root='data/synthpedes_small', split='train')
        >>> ds.metainfo['num_ids']  # train identities, e.g. for an ID head
    """

    METAINFO = dict(dataset_name='SynthPedes')

    def __init__(
        self,
        data_root: str,
        split: str = 'train',
        size: str = 'small',
        seed: int = 0,
        num_ids: Optional[int] = None,
        images_per_id: Optional[int] = None,
        image_size: Optional[Sequence[int]] = None,
        workers: Optional[int] = None,
        families: Optional[int] = None,
        with_part_codes: bool = False,
        **kwargs,
    ) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f'SynthPedes: seed must be an integer, got {seed!r}.')
        self.size = size
        self.seed = seed
        self.num_ids = num_ids
        self.images_per_id = images_per_id
        self.image_size = tuple(image_size) if image_size is not None else None
        self.workers = workers
        self.families = families
        self.with_part_codes = bool(with_part_codes)
        super().__init__(data_root=data_root, split=split, **kwargs)

    def _requested(self) -> dict:
        """The generator settings this dataset asks for (None: default)."""
        return dict(
            size=self.size,
            seed=self.seed,
            num_ids=self.num_ids,
            images_per_id=self.images_per_id,
            image_size=self.image_size,
            families=self.families,
        )

    def _check_meta(self, meta: dict) -> None:
        """Raise if an existing SynthPedes was made with other settings."""
        differences = []
        if self.families is None and meta.get('families') is not None:
            differences.append(
                f'families: asked the standard dataset, found families='
                f'{meta["families"]!r}'
            )
        for key, wanted in self._requested().items():
            if wanted is None:
                continue
            have = meta.get(key)
            if isinstance(have, list):
                have = tuple(have)
            if have != wanted:
                differences.append(f'{key}: asked {wanted!r}, found {have!r}')
        if differences:
            raise ValueError(
                f'SynthPedes: {self.data_root!r} holds a SynthPedes generated '
                f'with other settings ({"; ".join(differences)}). Point '
                'data_root at another folder, or match size/seed to the '
                'existing data.'
            )

    def prepare_synthpedes(self) -> Tuple[dict, bool]:
        """Make sure ``data_root`` holds the requested SynthPedes.

        Rank 0 generates it when absent; every rank then waits at a barrier
        (in distributed runs) and checks the result.

        Returns:
            tuple[dict, bool]: The SynthPedes meta and whether this call
            generated the data.
        """
        read_meta = _generator_function('read_synthpedes_meta')
        meta = read_meta(self.data_root)
        if meta is not None:
            self._check_meta(meta)
        rank, world_size = get_dist_info()
        generated = False
        if meta is None and rank == 0:
            kwargs = {
                k: v
                for k, v in self._requested().items()
                if v is not None and k not in ('size', 'seed')
            }
            if self.workers is not None:
                kwargs['workers'] = self.workers
            print_log(
                f'SynthPedes: generating size={self.size!r} seed={self.seed} '
                f'into {self.data_root!r} (first use).',
                logger='current',
            )
            _generator_function('generate_synthpedes')(
                self.data_root, size=self.size, seed=self.seed, **kwargs
            )
            generated = True
        if world_size > 1:
            # Every rank reaches this barrier, whatever it found above.
            barrier()
        if meta is None:
            meta = read_meta(self.data_root)
            if meta is None:
                raise RuntimeError(
                    f'SynthPedes: {self.data_root!r} holds no complete '
                    'SynthPedes after generation.'
                )
            self._check_meta(meta)
        current = getattr(synthpedes_generator, 'GENERATOR_VERSION', None)
        found = meta.get('generator_version')
        if current is not None and found is not None and found != current:
            print_log(
                f'SynthPedes: {self.data_root!r} was made by generator version '
                f'{found}, this tbps_mm has {current}; its images differ from '
                'a fresh generation with the same size and seed.',
                logger='current',
                level=logging.WARNING,
            )
        return meta, generated

    def load_data_list(self) -> list:
        """Generate SynthPedes if needed, then read it as CUHK-PEDES.

        Returns:
            list[dict]: The split's items.
        """
        meta, _ = self.prepare_synthpedes()
        self._metainfo.update(synthpedes={k: meta.get(k) for k in self._requested()})
        data_list = super().load_data_list()
        if meta.get('families') is None and not self.with_part_codes:
            return data_list
        people = self._read_identities()
        if meta.get('families') is not None:
            self._metainfo.update(family_size=int(meta['families']))
        codes = _part_codes(people) if self.with_part_codes else None
        for item in data_list:
            person = people.get(item['person_id'])
            if person is None:
                raise ValueError(
                    f'SynthPedes: person id {item["person_id"]} of '
                    f'{self.ann_file} is not in {self._attributes_path()}'
                )
            if meta.get('families') is not None:
                item['family_id'] = int(person['family'])
            if codes is not None:
                item['part_codes'] = codes[item['person_id']]
        return data_list

    def _attributes_path(self) -> str:
        return osp.join(self.data_root, 'attributes.json')

    def _read_identities(self) -> Dict[int, dict]:
        """The identities of attributes.json by person id."""
        path = self._attributes_path()
        try:
            with open(path, encoding='utf-8') as f:
                table = json.load(f)
            people = {int(p['id']): p for p in table['identities']}
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(
                f'SynthPedes: cannot read the identities of {path} ({e})'
            ) from e
        if self.families is not None or any('family' in p for p in people.values()):
            missing = [pid for pid, p in people.items() if 'family' not in p]
            if missing:
                raise ValueError(
                    f'SynthPedes: {path}: identities {missing[:5]} have no family'
                )
        return people


def _part_codes(people: Dict[int, dict]) -> Dict[int, np.ndarray]:
    """One int per body part and person: equal ints = the same joint values of
    that part's attributes (codes are indices in a sorted table per part)."""
    from .synthpedes.attributes import BODY_PARTS, part_attributes

    codes = {pid: np.zeros(len(BODY_PARTS), dtype=np.int64) for pid in people}
    for k, part in enumerate(BODY_PARTS):
        names = part_attributes(part)
        keys = {pid: tuple(str(p.get(n)) for n in names) for pid, p in people.items()}
        index = {key: i for i, key in enumerate(sorted(set(keys.values())))}
        for pid, key in keys.items():
            codes[pid][k] = index[key]
    return codes


def _generator_function(name: str):
    """Look up a function of the SynthPedes generator package at call time
    (so that tests can stand in for it)."""
    function = getattr(synthpedes_generator, name, None)
    if function is None:
        raise ImportError(
            f'SynthPedes: tbps_mm.datasets.synthpedes has no {name}(); the '
            'SynthPedes generator is not installed with this tbps_mm.'
        )
    return function
