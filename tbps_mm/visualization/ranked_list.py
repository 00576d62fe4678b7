"""``draw_ranked_list``: a text query above its top-k gallery images.

The figure of ``tools/test.py --show-dir`` and ``tools/search.py --out``: the
caption (wrapped) and an optional header line on top, then the ranked
thumbnails left to right, each with its rank and score below. With
correctness given, a correct item gets a green border and an incorrect one a
red border; without it, borders are neutral grey (free search has no ground
truth). Drawn with Pillow (neither MMEngine's Visualizer nor MMPretrain's
draws a text query above an image ranking).

Example:
    >>> fig = draw_ranked_list('a man in a black jacket',
    ...                        ['a.jpg', 'b.jpg'], scores=[0.8, 0.6],
    ...                        correct=[True, False])
    >>> fig.save('ranked.png')
"""

from typing import Optional, Sequence, Tuple

from PIL import Image, ImageDraw

from .canvas import ImageLike, draw_lines, fit_image, get_font, load_rgb, wrap_text

__all__ = ['draw_ranked_list', 'CORRECT_COLOR', 'WRONG_COLOR', 'NEUTRAL_COLOR']

CORRECT_COLOR = (40, 170, 60)
WRONG_COLOR = (220, 40, 40)
NEUTRAL_COLOR = (150, 150, 150)


def draw_ranked_list(
    caption: str,
    images: Sequence[ImageLike],
    scores: Optional[Sequence[float]] = None,
    correct: Optional[Sequence[bool]] = None,
    header: Optional[str] = None,
    thumb_size: Tuple[int, int] = (64, 160),
    border: int = 4,
    font_size: int = 13,
    margin: int = 8,
) -> Image.Image:
    """Draw a query caption above its ranked gallery images.

    Args:
        caption (str): The text query.
        images (Sequence[str | np.ndarray | PIL.Image]): The ranked images,
            best first (paths, RGB arrays or PIL images).
        scores (Sequence[float], optional): One score per image.
        correct (Sequence[bool], optional): One correctness flag per image;
            None draws neutral borders.
        header (str, optional): A line above the caption (e.g. the query's
            person id and AP).
        thumb_size (tuple[int, int]): (w, h) of each thumbnail. Defaults to
            (64, 160), a pedestrian crop's aspect.
        border (int): Border width in pixels. Defaults to 4.
        font_size (int): Text size in pixels. Defaults to 13.
        margin (int): Space around and between items. Defaults to 8.

    Returns:
        PIL.Image.Image: The RGB figure.

    Raises:
        ValueError: No images, or ``scores`` / ``correct`` of the wrong
            length, or an unreadable image (named).

    Example:
        >>> import numpy as np
        >>> img = np.zeros((32, 16, 3), np.uint8)
        >>> draw_ranked_list('a query', [img, img], scores=[0.9, 0.1]).size[0]
        168
    """
    if len(images) == 0:
        raise ValueError('draw_ranked_list needs at least one image')
    for name, values in (('scores', scores), ('correct', correct)):
        if values is not None and len(values) != len(images):
            raise ValueError(
                f'draw_ranked_list: {len(images)} images but {len(values)} {name}'
            )
    font = get_font(font_size)
    cell_w = thumb_size[0] + 2 * border
    cell_h = thumb_size[1] + 2 * border
    width = margin + len(images) * (cell_w + margin)
    text_width = max(width - 2 * margin, 40)
    top_lines = ([header] if header else []) + wrap_text(caption, font, text_width)
    line_h = font.getbbox('Hg')[3] + 4
    top_h = margin + len(top_lines) * line_h + margin
    label_h = 2 * line_h if scores is not None else line_h
    height = top_h + cell_h + label_h + margin

    figure = Image.new('RGB', (width, height), 'white')
    draw = ImageDraw.Draw(figure)
    if header:
        draw_lines(draw, (margin, margin), [header], font, fill=(90, 90, 90))
    draw_lines(
        draw,
        (margin, margin + (line_h if header else 0)),
        top_lines[1 if header else 0 :],
        font,
    )
    for i, image in enumerate(images):
        x = margin + i * (cell_w + margin)
        if correct is None:
            color = NEUTRAL_COLOR
        else:
            color = CORRECT_COLOR if correct[i] else WRONG_COLOR
        draw.rectangle([x, top_h, x + cell_w - 1, top_h + cell_h - 1], fill=color)
        figure.paste(
            fit_image(load_rgb(image), thumb_size), (x + border, top_h + border)
        )
        labels = [f'#{i + 1}']
        if scores is not None:
            labels.append(f'{float(scores[i]):.3f}')
        draw_lines(draw, (x, top_h + cell_h + 2), labels, font)
    return figure
