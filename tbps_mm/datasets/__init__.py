"""TBPS datasets (CUHK-PEDES, ICFG-PEDES, RSTPReid, SynthPedes) and their
transforms and samplers.

Importing this package registers the dataset classes in
``tbps_mm.registry.DATASETS``, the transforms in ``TRANSFORMS`` and the
samplers in ``DATA_SAMPLERS``.
"""

from . import samplers, transforms
from .base_tbps_dataset import BaseTBPSDataset
from .cuhk_pedes import CUHKPEDES
from .icfg_pedes import ICFGPEDES
from .rstpreid import RSTPReid
from .synthpedes_dataset import SynthPedes
from .synthpedes_videos import SynthPedesVideos, read_mot_ground_truth

__all__ = [
    'BaseTBPSDataset',
    'CUHKPEDES',
    'ICFGPEDES',
    'RSTPReid',
    'SynthPedes',
    'SynthPedesVideos',
    'read_mot_ground_truth',
    'samplers',
    'transforms',
]
