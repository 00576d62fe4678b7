"""Data samplers of tbps_mm, registered in ``tbps_mm.registry.DATA_SAMPLERS``."""

from .family_batch_sampler import FamilyBatchSampler

__all__ = ['FamilyBatchSampler']
