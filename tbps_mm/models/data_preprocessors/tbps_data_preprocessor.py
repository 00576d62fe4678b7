"""``TBPSDataPreprocessor``: from collated TBPS items to model inputs.

It implements ``docs/data_flow.md`` section 3: images of the batch (uint8,
BGR, as loaded) are stacked, moved to the model's device, converted to RGB and
normalised; token ids and masks are stacked; ``image_index`` / ``text_index``
say which data sample each image / caption belongs to, so that one batch may
mix pairs, gallery images and text queries. MMPretrain's
``ClsDataPreprocessor`` handles images only, so the batching of a
two-modality batch with missing entries is written here.

Example:
    >>> import torch
    >>> pre = TBPSDataPreprocessor()
    >>> batch = dict(inputs=dict(img=[torch.zeros(3, 8, 4, dtype=torch.uint8), None],
    ...                          text_ids=[None, torch.ones(5, dtype=torch.long)],
    ...                          text_mask=[None, torch.ones(5, dtype=torch.long)]),
    ...              data_samples=[None, None])
    >>> out = pre(batch)['inputs']
    >>> out['images'].shape, out['image_index'].tolist(), out['text_index'].tolist()
    (torch.Size([1, 3, 8, 4]), [0], [1])
"""

from typing import List, Optional, Sequence

import torch
from mmengine.model import BaseDataPreprocessor

from tbps_mm.registry import MODELS

__all__ = ['TBPSDataPreprocessor']

#: CLIP's image mean and std (RGB, 0-255 scale).
CLIP_MEAN = (122.77, 116.75, 104.09)
CLIP_STD = (68.50, 66.63, 70.32)


def _as_list(value, batch_size: int, key: str) -> List[Optional[torch.Tensor]]:
    """A per-sample list from a pseudo-collated list or a stacked tensor."""
    if value is None:
        return [None] * batch_size
    if isinstance(value, torch.Tensor):
        return list(value.unbind(0))
    if isinstance(value, (list, tuple)):
        return list(value)
    raise TypeError(
        f'TBPSDataPreprocessor: inputs[{key!r}] must be a list of tensors / None '
        f'(collate with pseudo_collate) or a stacked tensor, got '
        f'{type(value).__name__}.'
    )


@MODELS.register_module()
class TBPSDataPreprocessor(BaseDataPreprocessor):
    """Batch images and token ids of a (possibly mixed) TBPS batch.

    Args:
        mean (Sequence[float]): Per-channel mean in RGB order, 0-255 scale.
            Defaults to CLIP's ``(122.77, 116.75, 104.09)``.
        std (Sequence[float]): Per-channel std in RGB order, 0-255 scale.
            Defaults to CLIP's ``(68.50, 66.63, 70.32)``.
        to_rgb (bool): Convert the loaded BGR images to RGB. Defaults to True.
        non_blocking (bool): Non-blocking host-to-device copies.
            Defaults to False.
        trim_text (bool): Drop the trailing token columns that are padding in
            every caption of the batch. The text encoders mask padding, so
            their outputs do not change; the text side just costs less when
            captions are shorter than the pipeline's ``max_length``.
            Defaults to True.

    Example:
        >>> model_cfg = dict(type='TBPSRetriever',
        ...                  data_preprocessor=dict(type='TBPSDataPreprocessor'))
    """

    def __init__(
        self,
        mean: Sequence[float] = CLIP_MEAN,
        std: Sequence[float] = CLIP_STD,
        to_rgb: bool = True,
        non_blocking: bool = False,
        trim_text: bool = True,
    ) -> None:
        super().__init__(non_blocking=non_blocking)
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(
                f'TBPSDataPreprocessor: mean and std need 3 values, got {mean} '
                f'and {std}.'
            )
        if min(std) <= 0:
            raise ValueError(f'TBPSDataPreprocessor: std must be positive, got {std}.')
        self.to_rgb = to_rgb
        self.trim_text = trim_text
        self.register_buffer(
            'mean', torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), False
        )
        self.register_buffer(
            'std', torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), False
        )

    def forward(self, data: dict, training: bool = False) -> dict:
        """Batch, move and normalise.

        Args:
            data (dict): ``inputs`` (``img`` / ``text_ids`` / ``text_mask``,
                each a per-sample list with ``None`` for a missing modality)
                and ``data_samples``, as MMEngine's ``pseudo_collate`` makes
                them from ``PackTBPSInputs`` items.
            training (bool): Unused (no batch augmentation).

        Returns:
            dict: ``inputs`` (``images``, ``image_index``, ``text_ids``,
            ``text_mask``, ``text_index``) and ``data_samples`` on the
            model's device.
        """
        inputs = data['inputs']
        data_samples = data.get('data_samples')
        batch_size = self._batch_size(inputs, data_samples)
        imgs = _as_list(inputs.get('img'), batch_size, 'img')
        ids = _as_list(inputs.get('text_ids'), batch_size, 'text_ids')
        masks = _as_list(inputs.get('text_mask'), batch_size, 'text_mask')
        for key, column in (('img', imgs), ('text_ids', ids), ('text_mask', masks)):
            if len(column) != batch_size:
                raise ValueError(
                    f'TBPSDataPreprocessor: inputs[{key!r}] has {len(column)} '
                    f'entries for a batch of {batch_size}.'
                )

        image_index = [i for i, img in enumerate(imgs) if img is not None]
        text_index = [i for i, t in enumerate(ids) if t is not None]
        if [i for i, m in enumerate(masks) if m is not None] != text_index:
            raise ValueError(
                'TBPSDataPreprocessor: text_ids and text_mask must be present '
                'for the same samples.'
            )
        images = self._batch_images([imgs[i] for i in image_index], image_index)
        text_ids = [ids[i] for i in text_index]
        text_mask = [masks[i] for i in text_index]
        if self.trim_text:
            text_ids, text_mask = self._trim(text_ids, text_mask)
        text_ids = self._stack(text_ids, 'text_ids', text_index)
        text_mask = self._stack(text_mask, 'text_mask', text_index)
        return dict(
            inputs=dict(
                images=images,
                image_index=torch.tensor(
                    image_index, dtype=torch.long, device=self.device
                ),
                text_ids=None if text_ids is None else text_ids.long(),
                text_mask=None if text_mask is None else text_mask.long(),
                text_index=torch.tensor(
                    text_index, dtype=torch.long, device=self.device
                ),
            ),
            data_samples=self.cast_data(data_samples),
        )

    @staticmethod
    def _batch_size(inputs: dict, data_samples) -> int:
        """The batch size, from the data samples or the first input column."""
        if data_samples is not None:
            return len(data_samples)
        for key in ('img', 'text_ids'):
            value = inputs.get(key)
            if value is not None:
                return len(value)
        raise ValueError('TBPSDataPreprocessor: the batch has no inputs.')

    @staticmethod
    def _trim(ids: List[torch.Tensor], masks: List[torch.Tensor]) -> tuple:
        """Cut the token columns after the batch's last real token (host side)."""
        if not masks or any(m.dim() != 1 for m in masks):
            return ids, masks  # _stack reports odd shapes
        real = [torch.as_tensor(m).nonzero() for m in masks]
        length = max((int(r.max()) + 1 for r in real if len(r)), default=0)
        if length == 0:
            return ids, masks
        return [t[:length] for t in ids], [m[:length] for m in masks]

    def _stack(
        self, tensors: List[torch.Tensor], key: str, index: List[int]
    ) -> Optional[torch.Tensor]:
        """Stack same-shaped tensors and move them to the device."""
        if not tensors:
            return None
        shapes = {tuple(t.shape) for t in tensors}
        if len(shapes) > 1:
            detail = ', '.join(
                f'sample {i}: {tuple(t.shape)}' for i, t in zip(index, tensors)
            )
            raise ValueError(
                f'TBPSDataPreprocessor: {key} of one batch must share one shape '
                f'(resize images / set one max_length in the pipeline); got {detail}.'
            )
        return self.cast_data(torch.stack(tensors))

    def _batch_images(
        self, imgs: List[torch.Tensor], index: List[int]
    ) -> Optional[torch.Tensor]:
        """Stack, move (as uint8: 4x less traffic), convert and normalise."""
        batch = self._stack(imgs, 'images', index)
        if batch is None:
            return None
        if batch.dim() != 4 or batch.shape[1] != 3:
            raise ValueError(
                'TBPSDataPreprocessor: images must be 3-channel [3, H, W] '
                f'tensors, got a batch of shape {tuple(batch.shape)}.'
            )
        batch = batch.float()
        if self.to_rgb:
            batch = batch.flip(1)
        return (batch - self.mean) / self.std

    def extra_repr(self) -> str:
        mean = [round(v, 2) for v in self.mean.flatten().tolist()]
        std = [round(v, 2) for v in self.std.flatten().tolist()]
        return (
            f'mean={mean}, std={std}, to_rgb={self.to_rgb}, trim_text={self.trim_text}'
        )
