"""``TBPSVisualizer``: MMEngine's Visualizer with the two TBPS figures.

It adds ranked-list and part-explanation figures to MMEngine's visualisation
backends (local files, TensorBoard, W&B, ...) through the usual
``add_image``, so they can be logged during validation like any other image.

Example:
    >>> vis = TBPSVisualizer.get_instance(
    ...     'tbps', vis_backends=[dict(type='LocalVisBackend')],
    ...     save_dir='work_dirs/vis')
    >>> vis.add_ranked_list('query_3', 'a man in a red coat',
    ...                     ['a.jpg', 'b.jpg'], scores=[0.9, 0.5],
    ...                     correct=[True, False])
"""

from typing import Optional, Sequence

import numpy as np
from mmengine.visualization import Visualizer
from PIL import Image

from tbps_mm.registry import VISUALIZERS

from .part_explanation import draw_part_explanation
from .ranked_list import draw_ranked_list

__all__ = ['TBPSVisualizer']


@VISUALIZERS.register_module()
class TBPSVisualizer(Visualizer):
    """Visualizer for text-based person search results.

    Args:
        name (str): Instance name. Defaults to ``'visualizer'``.
        **kwargs: Passed to ``mmengine.visualization.Visualizer``
            (``vis_backends``, ``save_dir``, ...).

    Example:
        >>> visualizer = dict(type='TBPSVisualizer',
        ...                   vis_backends=[dict(type='LocalVisBackend')])
    """

    def __init__(self, name: str = 'visualizer', **kwargs) -> None:
        super().__init__(name=name, **kwargs)

    def _publish(
        self, name: str, figure: Image.Image, step: int, out_file: Optional[str]
    ) -> np.ndarray:
        array = np.asarray(figure.convert('RGB'))
        self.set_image(array)
        if out_file is not None:
            figure.save(out_file)
        else:
            self.add_image(name, array, step=step)
        return array

    def add_ranked_list(
        self,
        name: str,
        caption: str,
        images: Sequence,
        scores: Optional[Sequence[float]] = None,
        correct: Optional[Sequence[bool]] = None,
        header: Optional[str] = None,
        step: int = 0,
        out_file: Optional[str] = None,
        **kwargs,
    ) -> np.ndarray:
        """Draw a ranked list (see :func:`draw_ranked_list`) and log or save it.

        Args:
            name (str): Image name for the backends.
            caption (str): The query.
            images (Sequence): The ranked images.
            scores (Sequence[float], optional): Their scores.
            correct (Sequence[bool], optional): Their correctness.
            header (str, optional): A line above the caption.
            step (int): Global step for the backends. Defaults to 0.
            out_file (str, optional): Save to this file instead of the
                backends.
            **kwargs: Layout options of :func:`draw_ranked_list`.

        Returns:
            np.ndarray: The RGB figure.
        """
        figure = draw_ranked_list(
            caption, images, scores=scores, correct=correct, header=header, **kwargs
        )
        return self._publish(name, figure, step, out_file)

    def add_part_explanation(
        self,
        name: str,
        caption: str,
        image,
        attn,
        words: Sequence[str],
        word_weights,
        step: int = 0,
        out_file: Optional[str] = None,
        **kwargs,
    ) -> np.ndarray:
        """Draw a part explanation (see :func:`draw_part_explanation`).

        Args:
            name (str): Image name for the backends.
            caption (str): The query.
            image: The gallery image.
            attn: (K, h, w) or (K, N) image attention per part query.
            words (Sequence[str]): The caption's tokens.
            word_weights: (K, len(words)) word attention per part query.
            step (int): Global step for the backends. Defaults to 0.
            out_file (str, optional): Save to this file instead.
            **kwargs: Options of :func:`draw_part_explanation`.

        Returns:
            np.ndarray: The RGB figure.
        """
        figure = draw_part_explanation(
            caption, image, attn, words, word_weights, **kwargs
        )
        return self._publish(name, figure, step, out_file)
