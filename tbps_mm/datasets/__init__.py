"""TBPS datasets (CUHK-PEDES, ICFG-PEDES, RSTPReid, SynthPedes) and their
transforms.

Importing this package registers the dataset classes in
``tbps_mm.registry.DATASETS`` and the transforms in ``TRANSFORMS``.
"""

from . import transforms
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
    'transforms',
]
