"""``check_onnx_parity``: exported graphs against the PyTorch model.

The two backends of search are compared as search runs them: the PyTorch
backend (:class:`~tbps_mm.deployment.PyTorchEncoder`: the model's own
``encode_image`` / ``encode_text`` and ``fused_embed``, not the export
wrappers, so the check covers everything the wrappers leave out) against the
onnxruntime backend (:class:`~tbps_mm.deployment.ONNXRuntimeEncoder`). Inputs are
random: normalised images, and captions of several lengths with a different
amount of padding in every row.
"""

from typing import Dict, Sequence

import torch
from torch import nn

from .onnx_encoder import ONNXRuntimeEncoder
from .torch_encoder import PyTorchEncoder

__all__ = ['check_onnx_parity']


def _captions(batch: int, length: int, vocab_size: int, gen: torch.Generator) -> tuple:
    ids = torch.randint(1, vocab_size, (batch, length), generator=gen)
    real = torch.tensor([max(1, length - 3 * row) for row in range(batch)])
    mask = (torch.arange(length)[None] < real[:, None]).long()
    return ids * mask, mask


@torch.no_grad()
def check_onnx_parity(
    model: nn.Module,
    onnx_dir: str,
    batch_sizes: Sequence[int] = (1, 5),
    text_lengths: Sequence[int] = (4, 16, 77),
    seed: int = 0,
) -> Dict[str, float]:
    """The largest absolute difference of every output, ONNX vs PyTorch.

    Args:
        model (TBPSRetriever): The model the graphs were exported from.
        onnx_dir (str): The exported folder.
        batch_sizes (Sequence[int]): Batches to run. Defaults to (1, 5).
        text_lengths (Sequence[int]): Caption lengths (token columns) to run,
            clipped to the text encoder's positions. Defaults to (4, 16, 77).
        seed (int): Seed of the random inputs. Defaults to 0.

    Returns:
        dict[str, float]: ``'image/<output>'`` and ``'text/<output>'`` ->
        the largest absolute difference over all runs.

    Example:
        >>> diffs = check_onnx_parity(model, 'deploy/')
        >>> max(diffs.values()) < 1e-4
        True
    """
    reference = PyTorchEncoder(model)
    encoder = ONNXRuntimeEncoder(onnx_dir)
    meta = encoder.meta
    gen = torch.Generator().manual_seed(seed)
    diffs: Dict[str, float] = {}

    def compare(side: str, ref: dict, got: dict) -> None:
        for name in meta['outputs']:
            expected = ref[name]
            if name == 'attn' and side == 'text':
                # The model pads its text maps back to the full length.
                expected = expected[..., : got[name].shape[-1]]
            diff = float((got[name] - expected.float()).abs().max())
            key = f'{side}/{name}'
            diffs[key] = max(diffs.get(key, 0.0), diff)

    height, width = meta['image']['image_size']
    max_length = meta['text']['max_length']
    for batch in batch_sizes:
        images = torch.randn(batch, 3, height, width, generator=gen)
        compare('image', reference.encode_image(images), encoder.encode_image(images))
        for length in text_lengths:
            length = min(length, max_length) if max_length else length
            ids, mask = _captions(batch, length, meta['text']['vocab_size'], gen)
            expected = reference.encode_text(ids, mask)
            compare('text', expected, encoder.encode_text(ids, mask))
    return diffs
