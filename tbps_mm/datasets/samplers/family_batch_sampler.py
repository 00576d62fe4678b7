"""``FamilyBatchSampler``: training batches made of whole SynthPedes families.

In a random batch of a standard dataset an anchor rarely meets a negative
that shares most of its body parts, which is the situation the
commonality-based margin is for. This sampler orders the training pairs so
that every batch holds whole families (docs/synthpedes.md, "Families"):
``pairs_per_id`` pairs of every member of a family, next to each other, so an
anchor's hardest negatives are its family members, who share all but two of
its body parts.

It is a plain index sampler (like MMEngine's ``DefaultSampler``): the data
loader cuts its stream into batches of ``batch_size``, and the sampler makes
that stream out of family blocks of ``family_size * pairs_per_id`` indices,
a size that must divide ``batch_size``. An identity whose pair count is not a
multiple of ``pairs_per_id`` has its last chunk topped up with other pairs of
the same identity, so every block is full and no block straddles two batches.

Written by hand: neither MMEngine nor MMPretrain has a grouped sampler.

Example:
    >>> train_dataloader = dict(
    ...     batch_size=64,
    ...     sampler=dict(type='FamilyBatchSampler', batch_size=64, pairs_per_id=2),
    ...     dataset=dict(type='SynthPedes', families=4, split='train'))
"""

from typing import Dict, Iterator, List, Optional

import numpy as np
from mmengine.dist import get_dist_info, sync_random_seed
from torch.utils.data import Sampler

from tbps_mm.registry import DATA_SAMPLERS

__all__ = ['FamilyBatchSampler']


@DATA_SAMPLERS.register_module()
class FamilyBatchSampler(Sampler):
    """Yield training indices so that every batch holds whole families.

    Args:
        dataset: A training dataset whose items carry ``family_id`` and
            ``gt_label`` (SynthPedes with ``families=M``).
        batch_size (int): The loader's batch size (per process); a multiple
            of ``family_size * pairs_per_id``.
        pairs_per_id (int): Pairs of each member per family block. Defaults
            to 2 (a positive for every anchor).
        shuffle (bool): Shuffle pairs within identities and blocks across
            families every epoch. Defaults to True.
        seed (int, optional): Base seed; None syncs a random one across
            processes, as MMEngine's ``DefaultSampler`` does.

    Example:
        >>> sampler = FamilyBatchSampler(train_set, batch_size=64)
        >>> sampler.set_epoch(1)
        >>> order = list(sampler)
    """

    def __init__(
        self,
        dataset,
        batch_size: int,
        pairs_per_id: int = 2,
        shuffle: bool = True,
        seed: Optional[int] = None,
    ) -> None:
        if isinstance(pairs_per_id, bool) or not isinstance(pairs_per_id, int):
            raise ValueError(f'pairs_per_id must be an int, got {pairs_per_id!r}')
        if pairs_per_id < 1:
            raise ValueError(f'pairs_per_id must be >= 1, got {pairs_per_id}')
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.pairs_per_id = pairs_per_id
        self.shuffle = bool(shuffle)
        self.seed = sync_random_seed() if seed is None else int(seed)
        self.epoch = 0
        self.rank, self.world_size = get_dist_info()
        # family -> identity -> dataset indices
        self.families: Dict[int, Dict[int, List[int]]] = {}
        for index in range(len(dataset)):
            info = dataset.get_data_info(index)
            if 'family_id' not in info:
                raise ValueError(
                    f'FamilyBatchSampler: item {index} of {type(dataset).__name__} '
                    'has no family_id; use a SynthPedes generated with families=M'
                )
            family = self.families.setdefault(int(info['family_id']), {})
            family.setdefault(int(info['gt_label']), []).append(index)
        sizes = {len(members) for members in self.families.values()}
        if len(sizes) != 1:
            raise ValueError(
                f'FamilyBatchSampler: families have different sizes {sorted(sizes)}'
            )
        self.family_size = sizes.pop()
        self.block_size = self.family_size * pairs_per_id
        if self.batch_size % self.block_size:
            raise ValueError(
                f'FamilyBatchSampler: batch_size {self.batch_size} is not a '
                f'multiple of family_size x pairs_per_id = {self.family_size} x '
                f'{pairs_per_id} = {self.block_size}, so families would straddle '
                'batches'
            )
        rounds = sum(
            max(-(-len(ix) // pairs_per_id) for ix in members.values())
            for members in self.families.values()
        )
        self.num_blocks = rounds
        # Batches are dealt to processes in turn; every process gets as many.
        self.batches_per_rank = -(-rounds * self.block_size // self.batch_size)
        self.batches_per_rank = -(-self.batches_per_rank // self.world_size)

    def _blocks(self, rng: np.random.Generator) -> List[List[int]]:
        """Every family's blocks of one epoch, in shuffled order."""
        blocks = []
        for family in sorted(self.families):
            members = self.families[family]
            chunks = []
            for label in sorted(members):
                indices = list(members[label])
                if self.shuffle:
                    rng.shuffle(indices)
                short = -len(indices) % self.pairs_per_id
                if short:  # top up the last chunk with the identity's own pairs
                    indices += [indices[i % len(indices)] for i in range(short)]
                chunks.append(
                    [
                        indices[i : i + self.pairs_per_id]
                        for i in range(0, len(indices), self.pairs_per_id)
                    ]
                )
            for r in range(max(len(c) for c in chunks)):
                block = []
                for c in chunks:  # a member with fewer rounds repeats its chunks
                    block += c[r % len(c)]
                blocks.append(block)
        if self.shuffle:
            order = rng.permutation(len(blocks))
            blocks = [blocks[i] for i in order]
        return blocks

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        stream = [i for block in self._blocks(rng) for i in block]
        batches = [
            stream[i : i + self.batch_size]
            for i in range(0, len(stream), self.batch_size)
        ]
        needed = self.batches_per_rank * self.world_size
        batches += batches[: needed - len(batches)]  # equal share per process
        for batch in batches[self.rank :: self.world_size]:
            yield from batch

    def __len__(self) -> int:
        total = self.num_blocks * self.block_size
        return sum(len(b) for b in self._shares(total)[self.rank :: self.world_size])

    def _shares(self, total: int) -> List[range]:
        """The index ranges of the padded batch list (as :meth:`__iter__`)."""
        batches = [
            range(i, min(i + self.batch_size, total))
            for i in range(0, total, self.batch_size)
        ]
        needed = self.batches_per_rank * self.world_size
        return batches + batches[: needed - len(batches)]

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch (a new order per epoch, as MMEngine's samplers do)."""
        self.epoch = epoch
