"""Models: retrievers, text encoders, heads, losses and data preprocessors.

Importing the package also routes MMEngine's local-file checkpoint loads
(``init_cfg=dict(type='Pretrained', ...)``, ``load_checkpoint``) through
:func:`tbps_mm.models.checkpoint.load_checkpoint_file`, which never runs code
from a file.
"""

from . import data_preprocessors, heads, losses, retrievers, text_encoders
from .checkpoint import register_mmengine_loader

register_mmengine_loader()
