"""``draw_part_explanation``: what each part query looks at, in both modalities.

The figure of ``tools/search.py --explain`` and ``TBPSInferencer.explain``:
the query caption on top; the image; then, per part query, its attention over
the image's patch tokens (reshaped to the patch grid, upsampled and overlaid
as a heat map) above the caption words that the same query attends to, with
their weights. Because the part queries are shared by both encoders, column k
shows the k-th part's correspondence between the image and the caption.

Heat maps reuse MMEngine's ``convert_overlay_heatmap`` (OpenCV's JET colour
map); the layout is drawn with Pillow.

Example:
    >>> fig = draw_part_explanation(
    ...     'a man in a red coat', 'person.jpg', attn=attn,  # (K, h, w)
    ...     words=['a', 'man', 'in', 'a', 'red', 'coat'],
    ...     word_weights=weights)                           # (K, 6)
    >>> fig.save('explain.png')
"""

from typing import Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
from mmengine.visualization.utils import convert_overlay_heatmap
from PIL import Image, ImageDraw

from .canvas import ImageLike, draw_lines, fit_image, get_font, load_rgb, wrap_text

__all__ = ['draw_part_explanation', 'attention_heatmap']

ArrayLike = Union[np.ndarray, torch.Tensor]


def _numpy(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def attention_heatmap(image: Image.Image, attn_map: ArrayLike, alpha: float = 0.5):
    """Overlay one (h, w) attention map on an RGB image.

    Args:
        image (PIL.Image.Image): The RGB image.
        attn_map (np.ndarray | Tensor): (h, w) attention over the patch grid.
        alpha (float): Heat map opacity. Defaults to 0.5.

    Returns:
        PIL.Image.Image: The image with the heat map, same size.

    Example:
        >>> img = Image.new('RGB', (32, 96))
        >>> attention_heatmap(img, np.random.rand(6, 2)).size
        (32, 96)
    """
    attn_map = _numpy(attn_map)
    if attn_map.ndim != 2:
        raise ValueError(f'attn_map must be (h, w), got shape {attn_map.shape}')
    rgb = np.asarray(image.convert('RGB'))
    upsampled = cv2.resize(
        attn_map, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR
    )
    if float(upsampled.max() - upsampled.min()) == 0.0:
        upsampled = np.zeros_like(upsampled)  # uniform attention: no hot spot
    return Image.fromarray(convert_overlay_heatmap(upsampled, rgb, alpha=alpha))


def draw_part_explanation(
    caption: str,
    image: ImageLike,
    attn: ArrayLike,
    words: Sequence[str],
    word_weights: ArrayLike,
    attn_hw: Optional[Tuple[int, int]] = None,
    part_names: Optional[Sequence[str]] = None,
    header: Optional[str] = None,
    top_words: int = 5,
    thumb_size: Tuple[int, int] = (80, 200),
    font_size: int = 13,
    margin: int = 8,
) -> Image.Image:
    """Draw each part query's image attention and caption-word weights.

    Args:
        caption (str): The text query.
        image (str | np.ndarray | PIL.Image): The gallery image (a path, an
            RGB array or a PIL image).
        attn (np.ndarray | Tensor): (K, h, w) attention of each part query
            over the patch grid, or (K, N) with ``attn_hw`` giving (h, w).
        words (Sequence[str]): The caption's tokens as shown.
        word_weights (np.ndarray | Tensor): (K, len(words)) attention of each
            part query over those tokens.
        attn_hw (tuple[int, int], optional): The patch grid for (K, N) input.
        part_names (Sequence[str], optional): A name per part (default
            ``part 1`` ...).
        header (str, optional): A line above the caption (e.g. the score).
        top_words (int): Words listed per part, by weight. Defaults to 5.
        thumb_size (tuple[int, int]): (w, h) of each image. Defaults to
            (80, 200).
        font_size (int): Text size. Defaults to 13.
        margin (int): Spacing. Defaults to 8.

    Returns:
        PIL.Image.Image: The RGB figure.

    Raises:
        ValueError: Shapes that do not fit together.

    Example:
        >>> import numpy as np
        >>> fig = draw_part_explanation(
        ...     'a man in red', np.zeros((96, 32, 3), np.uint8),
        ...     attn=np.random.rand(2, 12), attn_hw=(6, 2),
        ...     words=['a', 'man', 'in', 'red'], word_weights=np.random.rand(2, 4))
        >>> fig.mode
        'RGB'
    """
    attn = _numpy(attn)
    weights = _numpy(word_weights)
    if attn.ndim == 2:
        if attn_hw is None or attn_hw[0] * attn_hw[1] != attn.shape[1]:
            raise ValueError(
                f'attn of shape {attn.shape} (K, N) needs attn_hw=(h, w) with '
                f'h * w == N, got attn_hw={attn_hw}'
            )
        attn = attn.reshape(attn.shape[0], *attn_hw)
    if attn.ndim != 3:
        raise ValueError(f'attn must be (K, h, w) or (K, N), got shape {attn.shape}')
    num_parts = attn.shape[0]
    if weights.shape != (num_parts, len(words)):
        raise ValueError(
            f'word_weights must be (K={num_parts}, {len(words)} words), got '
            f'shape {weights.shape}'
        )
    if part_names is None:
        part_names = [f'part {k + 1}' for k in range(num_parts)]
    if len(part_names) != num_parts:
        raise ValueError(f'{len(part_names)} part_names for {num_parts} parts')

    font = get_font(font_size)
    line_h = font.getbbox('Hg')[3] + 4
    picture = fit_image(load_rgb(image), thumb_size)
    columns = 1 + num_parts
    width = margin + columns * (thumb_size[0] + margin)
    top_lines = ([header] if header else []) + wrap_text(
        caption, font, max(width - 2 * margin, 40)
    )
    top_h = margin + len(top_lines) * line_h + margin
    shown = min(top_words, len(words))
    height = top_h + thumb_size[1] + (2 + shown) * line_h + margin

    figure = Image.new('RGB', (width, height), 'white')
    draw = ImageDraw.Draw(figure)
    draw_lines(draw, (margin, margin), top_lines, font)
    figure.paste(picture, (margin, top_h))
    draw_lines(draw, (margin, top_h + thumb_size[1] + 2), ['image'], font)
    for k in range(num_parts):
        x = margin + (k + 1) * (thumb_size[0] + margin)
        figure.paste(attention_heatmap(picture, attn[k]), (x, top_h))
        order = np.argsort(-weights[k], kind='stable')[:shown]
        labels = [str(part_names[k])] + [
            _fit(words[i], f' {weights[k, i]:.2f}', font, thumb_size[0]) for i in order
        ]
        draw_lines(draw, (x, top_h + thumb_size[1] + 2), labels, font)
    return figure


def _fit(word: str, suffix: str, font, width: int) -> str:
    """``word + suffix``, the word shortened with '~' to fit ``width`` pixels."""
    if font.getlength(word + suffix) <= width:
        return word + suffix
    while len(word) > 1 and font.getlength(word + '~' + suffix) > width:
        word = word[:-1]
    return word + '~' + suffix
