"""Caption transforms, the image-only wrapper and the TBPS packer.

Importing this package registers them in ``tbps_mm.registry.TRANSFORMS``.
"""

from .augment_caption import AugmentCaption
from .image_pipeline import ImagePipeline, ImageTransformError
from .normalize_caption import NormalizeCaption
from .pack_tbps_inputs import PackTBPSInputs
from .tokenize_caption import TOKENIZER_FILES, TokenizeCaption, load_local_tokenizer

__all__ = [
    'AugmentCaption',
    'NormalizeCaption',
    'ImagePipeline',
    'ImageTransformError',
    'PackTBPSInputs',
    'TokenizeCaption',
    'load_local_tokenizer',
    'TOKENIZER_FILES',
]
