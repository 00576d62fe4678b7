"""Models: retrievers, text encoders, heads, losses and data preprocessors."""

from . import data_preprocessors, heads, losses, retrievers, text_encoders
