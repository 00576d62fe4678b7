"""The global batch of a distributed step, for the batch-contrastive losses.

SDM and the commonality-margin ranking loss score every sample against every
other sample of the batch. Under data parallelism each process holds only its
own share; :func:`gather_batch` gives a loss every process's samples (features
and labels, in rank order) so that it can score its local anchors against the
whole global batch. The features travel through torch's autograd-aware
all-gather (``torch.distributed._functional_collectives.all_gather_single``,
which torch names as the successor of the deprecated
``torch.distributed.nn.functional.all_gather``): in the backward pass the
gradient every process computes for a gathered row is summed and returned to
the process that owns the row. Per-process batch sizes are exchanged first
with MMEngine's ``all_gather``, so uneven last batches gather correctly.

Loss scaling convention. DDP averages gradients over the N processes, and
MMEngine logs per-process losses. A loss that sums its local anchors' terms
and multiplies by ``N / global_count`` (:meth:`GatheredBatch.anchor_mean`)
therefore has a mean over processes equal to the single-process loss on the
global batch, and the averaged gradient equals that loss's gradient.
"""

from typing import NamedTuple, Optional, Tuple

import torch
from mmengine import dist as mm_dist
from torch import Tensor


class GatheredBatch(NamedTuple):
    """Every process's samples and where this process's rows sit among them.

    Attributes:
        tensors (tuple[Tensor, ...]): The gathered tensors, each (M, ...)
            with the M global samples in rank order.
        offset (int): Row of this process's first sample in ``tensors``.
        world_size (int): Processes whose samples were gathered (1 when
            nothing was).
        global_size (int): M, the number of samples over all processes.
    """

    tensors: Tuple[Tensor, ...]
    offset: int
    world_size: int
    global_size: int

    def anchor_mean(self, values: Tensor, count: Optional[Tensor] = None) -> Tensor:
        """This process's share of a mean over the global batch's anchors.

        Args:
            values (Tensor): (..., B) one term per local anchor.
            count (Tensor, optional): Number of anchors the global mean is
                over (e.g. the anchors that have a negative); defaults to
                every sample of the global batch.

        Returns:
            Tensor: ``values.sum(-1) * world_size / count``: its mean over
            the processes is the mean over all ``count`` anchors (the plain
            mean over local anchors when nothing was gathered).

        Example:
            >>> batch = gather_batch(torch.randn(4, 8), enabled=False)
            >>> batch.anchor_mean(torch.ones(4))
            tensor(1.)
        """
        if count is None:
            count = values.new_tensor(float(self.global_size))
        return values.sum(dim=-1) * self.world_size / count.to(values.dtype)


def gather_batch(*tensors: Tensor, enabled: bool = True) -> GatheredBatch:
    """Gather (B, ...) tensors of one batch from every process, with gradient.

    Every process must call it (it is a collective) with the same number of
    tensors, each of the same trailing shape and dtype on every process;
    batch sizes may differ. With ``enabled=False``, or outside a distributed
    run, the tensors come back unchanged.

    Args:
        *tensors (Tensor): (B, ...) tensors sharing their first dimension B,
            e.g. image features, text features and labels.
        enabled (bool): Gather; when False this process's batch is the
            whole batch. Defaults to True.

    Returns:
        GatheredBatch: The (M, ...) global tensors, this process's row
        offset, the world size and M.

    Example:
        >>> batch = gather_batch(image, text, labels)  # doctest: +SKIP
        >>> image_all, text_all, labels_all = batch.tensors  # doctest: +SKIP
    """
    if not tensors:
        raise ValueError('gather_batch needs at least one tensor')
    local = tensors[0].shape[0]
    for tensor in tensors[1:]:
        if tensor.shape[0] != local:
            raise ValueError(
                'gather_batch needs tensors of one batch size, got '
                f'{[tuple(t.shape) for t in tensors]}'
            )
    world_size = mm_dist.get_world_size()
    if not enabled or world_size == 1:
        return GatheredBatch(tuple(tensors), 0, 1, local)

    from torch.distributed import group
    from torch.distributed._functional_collectives import all_gather_single

    sizes = mm_dist.all_gather(torch.tensor([local], device=tensors[0].device))
    sizes = [int(size) for size in sizes]
    longest = max(sizes)
    gathered = []
    for tensor in tensors:
        if local < longest:
            padding = tensor.new_zeros((longest - local, *tensor.shape[1:]))
            tensor = torch.cat([tensor, padding])
        out = all_gather_single(tensor.contiguous(), 0, group.WORLD)
        if min(sizes) < longest:
            out = torch.cat(
                [out[r * longest : r * longest + size] for r, size in enumerate(sizes)]
            )
        gathered.append(out)
    offset = sum(sizes[: mm_dist.get_rank()])
    return GatheredBatch(tuple(gathered), offset, world_size, sum(sizes))


__all__ = ['GatheredBatch', 'gather_batch']
