"""Visualisation: ranked-list figures, part-attention explanations, visualizer."""

from .canvas import get_font, load_rgb, wrap_text
from .part_explanation import attention_heatmap, draw_part_explanation
from .ranked_list import draw_ranked_list
from .tbps_visualizer import TBPSVisualizer

__all__ = [
    'draw_ranked_list',
    'draw_part_explanation',
    'attention_heatmap',
    'TBPSVisualizer',
    'get_font',
    'load_rgb',
    'wrap_text',
]
