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

import logging
from typing import Optional, Sequence, Tuple

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
        super().__init__(data_root=data_root, split=split, **kwargs)

    def _requested(self) -> dict:
        """The generator settings this dataset asks for (None: default)."""
        return dict(
            size=self.size,
            seed=self.seed,
            num_ids=self.num_ids,
            images_per_id=self.images_per_id,
            image_size=self.image_size,
        )

    def _check_meta(self, meta: dict) -> None:
        """Raise if an existing SynthPedes was made with other settings."""
        differences = []
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
        return super().load_data_list()


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
