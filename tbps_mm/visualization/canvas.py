"""Pillow helpers shared by the tbps_mm figures: fonts, wrapped text, images.

Pillow draws everything; this module owns only what every figure repeats:
loading an image from a path / array / PIL image as RGB, fitting it into a
thumbnail box, and wrapping a caption to a pixel width.

Example:
    >>> font = get_font(14)
    >>> wrap_text('a woman in a red coat', font, max_width=80)
    ['a woman in', 'a red coat']
"""

from functools import lru_cache
from typing import List, Tuple, Union

import numpy as np
from PIL import Image, ImageDraw, ImageFont

ImageLike = Union[str, np.ndarray, Image.Image]

__all__ = ['ImageLike', 'get_font', 'wrap_text', 'load_rgb', 'fit_image', 'text_height']


@lru_cache(maxsize=8)
def get_font(size: int = 14) -> ImageFont.ImageFont:
    """Pillow's built-in scalable font at ``size`` pixels (no font files)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow without FreeType
        return ImageFont.load_default()


def text_height(font: ImageFont.ImageFont) -> int:
    """Line height of ``font`` in pixels."""
    box = font.getbbox('Hg')
    return int(box[3] - box[1]) + 4


def wrap_text(text: str, font: ImageFont.ImageFont, max_width: int) -> List[str]:
    """Greedy word wrap of ``text`` to lines at most ``max_width`` pixels wide.

    Args:
        text (str): The text.
        font (ImageFont): The font it is drawn with.
        max_width (int): Line width in pixels; a single longer word is split.

    Returns:
        list[str]: The lines (at least one).

    Example:
        >>> len(wrap_text('x ' * 100, get_font(12), 100)) > 1
        True
    """
    lines: List[str] = []
    for paragraph in str(text).splitlines() or ['']:
        line = ''
        for word in paragraph.split():
            candidate = f'{line} {word}'.strip()
            if font.getlength(candidate) <= max_width:
                line = candidate
                continue
            if line:
                lines.append(line)
            # A word wider than the line is split into pieces that fit.
            while font.getlength(word) > max_width and len(word) > 1:
                cut = len(word)
                while cut > 1 and font.getlength(word[:cut]) > max_width:
                    cut -= 1
                lines.append(word[:cut])
                word = word[cut:]
            line = word
        lines.append(line)
    return lines or ['']


def load_rgb(image: ImageLike) -> Image.Image:
    """An RGB PIL image from a path, an (H, W, 3) RGB uint8 array or a PIL image.

    Raises:
        FileNotFoundError: The path does not exist.
        ValueError: The file is not a readable image, or the array is not
            (H, W) / (H, W, 3).
    """
    if isinstance(image, Image.Image):
        return image.convert('RGB')
    if isinstance(image, np.ndarray):
        if image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3)):
            return Image.fromarray(
                np.ascontiguousarray(image).astype(np.uint8)
            ).convert('RGB')
        raise ValueError(
            f'image arrays must be (H, W) or (H, W, 3) RGB, got {image.shape}'
        )
    try:
        with Image.open(image) as img:
            return img.convert('RGB')
    except FileNotFoundError as err:
        raise FileNotFoundError(f'image "{image}" does not exist') from err
    except OSError as err:
        raise ValueError(f'image "{image}" cannot be read: {err}') from err


def fit_image(image: Image.Image, size: Tuple[int, int]) -> Image.Image:
    """Resize ``image`` to fit in ``size`` (w, h), keeping its aspect, centred
    on a white canvas of exactly ``size``."""
    width, height = size
    scale = min(width / image.width, height / image.height)
    new = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    resized = image.resize(new, Image.BILINEAR)
    canvas = Image.new('RGB', size, 'white')
    canvas.paste(resized, ((width - new[0]) // 2, (height - new[1]) // 2))
    return canvas


def draw_lines(
    draw: ImageDraw.ImageDraw,
    xy: Tuple[int, int],
    lines: List[str],
    font: ImageFont.ImageFont,
    fill: str = 'black',
) -> int:
    """Draw ``lines`` from ``xy`` downwards; return the y below the last."""
    x, y = xy
    step = text_height(font)
    for line in lines:
        draw.text((x, y), line, fill=fill, font=font)
        y += step
    return y
