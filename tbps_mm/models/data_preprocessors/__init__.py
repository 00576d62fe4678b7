"""Data preprocessors: collated TBPS batches to model inputs.

Importing this package registers them in ``tbps_mm.registry.MODELS``.
"""

from .tbps_data_preprocessor import TBPSDataPreprocessor

__all__ = ['TBPSDataPreprocessor']
