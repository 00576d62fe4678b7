"""``ImagePipeline``: image transforms that only run on items with an image.

One TBPS pipeline serves training pairs, gallery images and text queries;
MMCV's ``Compose`` would run ``LoadImageFromFile`` on a query and fail, so the
image transforms are wrapped here and skipped for items without ``img_path``.
Errors raised inside the wrapped transforms are re-raised with the image path
and the failing transform named (MMCV's loader names a missing file but only
asserts on an undecodable one).

Example:
    >>> pipe = ImagePipeline(transforms=[dict(type='LoadImageFromFile'),
    ...                                  dict(type='Resize', scale=(48, 128))])
    >>> pipe(dict(text='a man'))  # a query: unchanged
    {'text': 'a man'}
"""

from typing import Callable, List, Optional, Sequence, Union

from mmcv.transforms import BaseTransform

from tbps_mm.registry import TRANSFORMS

__all__ = ['ImagePipeline', 'ImageTransformError']


class ImageTransformError(RuntimeError):
    """An image transform failed on a sample's image (for the loader: the
    file exists but cannot be read or decoded)."""


@TRANSFORMS.register_module()
class ImagePipeline(BaseTransform):
    """Run image transforms only when the item carries an image.

    **Required keys:** ``img_path`` (optional). Keys added or modified are
    those of the wrapped transforms.

    Args:
        transforms (Sequence[dict | Callable]): MMCV / MMPretrain image
            transforms (configs or objects), run in order. If one returns
            ``None`` the item is dropped as MMCV's ``Compose`` would.

    Example:
        >>> ImagePipeline([dict(type='LoadImageFromFile'),
        ...                dict(type='RandomFlip', prob=0.5)])
    """

    def __init__(self, transforms: Sequence[Union[dict, Callable]]) -> None:
        self.transforms: List[Callable] = []
        for t in transforms:
            if isinstance(t, dict):
                t = TRANSFORMS.build(t)
            if not callable(t):
                raise TypeError(
                    f'ImagePipeline: transforms must be configs or callables, '
                    f'got {type(t).__name__}.'
                )
            self.transforms.append(t)

    def transform(self, results: dict) -> Optional[dict]:
        """Apply the image transforms if ``results`` has an ``img_path``.

        Args:
            results (dict): The pipeline item.

        Returns:
            dict | None: The transformed item, or None if a transform
            dropped it.

        Raises:
            FileNotFoundError: The image file does not exist (names the path).
            ImageTransformError: A transform failed on the image (names the
                path and the transform).
        """
        path = results.get('img_path')
        if path is None:
            return results
        for t in self.transforms:
            try:
                results = t(results)
            except FileNotFoundError as e:
                raise FileNotFoundError(
                    f'Image {path!r} not found ({type(t).__name__}: {e})'
                ) from e
            except Exception as e:  # noqa: BLE001 - re-raised with the path named
                raise ImageTransformError(
                    f'{type(t).__name__} failed on image {path!r}: '
                    f'{type(e).__name__}: {e}'
                ) from e
            if results is None:
                return None
        return results

    def __repr__(self) -> str:
        inner = ', '.join(repr(t) for t in self.transforms)
        return f'{type(self).__name__}(transforms=[{inner}])'
