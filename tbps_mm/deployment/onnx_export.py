"""Export a ``TBPSRetriever`` to two ONNX graphs, one per modality.

``export_onnx`` writes into one folder:

* ``image_encoder.onnx``: ``images`` (B, 3, H, W) float32, normalised as the
  data preprocessor gives them -> ``fused_embed``, ``embed``,
  ``part_embeds`` (and ``attn``);
* ``text_encoder.onnx``: ``text_ids`` and ``text_mask`` (B, L) int64 ->
  the same outputs for captions;
* ``deploy.json``: what a runtime needs to use them (input and output names,
  the image size, the text encoder's vocabulary size and longest caption,
  the fusion weight, K, D, the patch grid of the attention maps) and the
  SHA-256 of the checkpoint they were exported from.

The batch is dynamic in both graphs and the caption length in the text graph.
The graphs come from torch's TorchScript-based exporter
(``torch.onnx.export(..., dynamo=False)``): the ``torch.export`` based one
stops at the model's data-dependent input checks (e.g. that every token id
is inside the vocabulary), which only run while tracing here and are repeated
by :class:`~tbps_mm.deployment.ONNXRuntimeEncoder` at run time.
"""

import json
import os
import os.path as osp
import warnings
from typing import Optional, Tuple

import torch
from torch import nn

from .export_wrappers import ImageEncoderForExport, TextEncoderForExport

__all__ = [
    'export_onnx',
    'image_size_from_config',
    'DEPLOY_META_FILE',
    'IMAGE_GRAPH_FILE',
    'TEXT_GRAPH_FILE',
    'DEPLOY_FORMAT',
]

DEPLOY_META_FILE = 'deploy.json'
IMAGE_GRAPH_FILE = 'image_encoder.onnx'
TEXT_GRAPH_FILE = 'text_encoder.onnx'
DEPLOY_FORMAT = 'tbps_mm-onnx'
DEPLOY_VERSION = 1
OUTPUTS = ('fused_embed', 'embed', 'part_embeds')
#: Length of the example caption the text graph is traced with (at most the
#: text encoder's positions); any length up to those positions runs.
TRACE_TEXT_LENGTH = 16


def _example_text(
    vocab_size: int, length: int, batch: int = 2
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Token ids and a mask with padding in the second row.

    A trace of all-real captions could let a library drop the mask as a
    no-op; a padded row keeps the masking in the graph.
    """
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1, vocab_size, (batch, length), generator=gen)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[1:, max(1, length // 2) :] = 0
    return ids * mask, mask


def export_onnx(
    model: nn.Module,
    out_dir: str,
    image_size: Tuple[int, int],
    with_attention: bool = False,
    opset: int = 17,
    checkpoint_sha256: Optional[str] = None,
) -> dict:
    """Export the image and text sides of a model to ONNX.

    Args:
        model (TBPSRetriever): The model (put in eval mode here).
        out_dir (str): The folder to write (created).
        image_size (tuple[int, int]): ``(H, W)`` of the images the pipeline
            gives the model.
        with_attention (bool): Also output each part query's attention maps
            (``attn``; what explanations draw). Defaults to False.
        opset (int): ONNX opset. Defaults to 17.
        checkpoint_sha256 (str, optional): Recorded in ``deploy.json`` so a
            runtime can tell whether the graphs fit a checkpoint.

    Returns:
        dict: The metadata written to ``deploy.json``.

    Raises:
        ValueError: A model without a text encoder vocabulary size, or an
            image size that is not two positive integers.

    Example:
        >>> meta = export_onnx(model, 'deploy/', image_size=(128, 48))
        >>> meta['image']['file']
        'image_encoder.onnx'
    """
    if len(image_size) != 2 or min(int(s) for s in image_size) < 1:
        raise ValueError(f'image_size must be (H, W) > 0, got {image_size}')
    height, width = (int(s) for s in image_size)
    encoder = model.text_encoder
    vocab_size = getattr(encoder, 'vocab_size', None)
    if vocab_size is None:
        raise ValueError(
            f'the text encoder ({type(encoder).__name__}) has no vocab_size: '
            'export needs it to make an example caption'
        )
    max_length = getattr(encoder, 'max_length', None)
    trace_length = min(TRACE_TEXT_LENGTH, max_length or TRACE_TEXT_LENGTH)
    model.eval()
    os.makedirs(out_dir, exist_ok=True)
    outputs = list(OUTPUTS) + (['attn'] if with_attention else [])

    images = torch.zeros(2, 3, height, width)
    with torch.no_grad():
        probe = model.encode_image(images)
    attn_hw = probe.get('attn_hw')
    image_axes = {'images': {0: 'batch'}}
    image_axes.update({name: {0: 'batch'} for name in outputs})
    text_axes = {'text_ids': {0: 'batch', 1: 'length'}}
    text_axes['text_mask'] = {0: 'batch', 1: 'length'}
    text_axes.update({name: {0: 'batch'} for name in outputs})
    if with_attention:
        text_axes['attn'] = {0: 'batch', 2: 'length'}
    with warnings.catch_warnings():
        # Tracing warns about every Python-side shape check it runs once.
        warnings.filterwarnings('ignore', category=torch.jit.TracerWarning)
        # transformers builds the attention mask by indexing the padding mask
        # with position ranges, which are never negative: the case this
        # warning is about does not arise (and check_onnx_parity would show it).
        warnings.filterwarnings(
            'ignore', message='Exporting aten::index operator of advanced indexing'
        )
        torch.onnx.export(
            ImageEncoderForExport(model, with_attention).eval(),
            (images,),
            osp.join(out_dir, IMAGE_GRAPH_FILE),
            input_names=['images'],
            output_names=outputs,
            dynamic_axes=image_axes,
            opset_version=opset,
            dynamo=False,
        )
        torch.onnx.export(
            TextEncoderForExport(model, with_attention).eval(),
            _example_text(vocab_size, trace_length),
            osp.join(out_dir, TEXT_GRAPH_FILE),
            input_names=['text_ids', 'text_mask'],
            output_names=outputs,
            dynamic_axes=text_axes,
            opset_version=opset,
            dynamo=False,
        )
    meta = dict(
        format=DEPLOY_FORMAT,
        version=DEPLOY_VERSION,
        opset=opset,
        torch=torch.__version__,
        checkpoint_sha256=checkpoint_sha256,
        fusion_weight=float(model.fusion_weight),
        num_parts=int(probe['part_embeds'].shape[1]),
        embed_dims=int(probe['embed'].shape[1]),
        fused_dims=int(model.fused_embed(probe).shape[1]),
        with_attention=with_attention,
        outputs=outputs,
        image=dict(
            file=IMAGE_GRAPH_FILE,
            inputs=['images'],
            image_size=[height, width],
            attn_hw=list(attn_hw) if attn_hw is not None else None,
        ),
        text=dict(
            file=TEXT_GRAPH_FILE,
            inputs=['text_ids', 'text_mask'],
            vocab_size=int(vocab_size),
            max_length=None if max_length is None else int(max_length),
        ),
    )
    with open(osp.join(out_dir, DEPLOY_META_FILE), 'w', encoding='utf-8') as f:
        json.dump(meta, f, indent=2)
    return meta


def image_size_from_config(cfg) -> Optional[Tuple[int, int]]:
    """``(H, W)`` of the images a config's test pipeline gives the model.

    Looks for a ``Resize`` with a ``scale=(W, H)`` in the test (else val)
    dataloader's pipeline, then for the image encoder's ``img_size``.

    Args:
        cfg (Config): A tbps_mm config.

    Returns:
        tuple[int, int] | None: ``(H, W)``, or None when the config does not
        say.

    Example:
        >>> image_size_from_config(Config.fromfile('configs/tbps_synth.py'))
        (128, 48)
    """

    def find_resize(node):
        if isinstance(node, dict):
            if node.get('type') == 'Resize' and node.get('scale') is not None:
                return node['scale']
            children = list(node.values())
        elif isinstance(node, (list, tuple)):
            children = list(node)
        else:
            return None
        for child in children:
            found = find_resize(child)
            if found is not None:
                return found
        return None

    for loader in ('test_dataloader', 'val_dataloader'):
        scale = find_resize(cfg.get(loader) or {})
        if scale is not None:
            if isinstance(scale, int):
                return (scale, scale)
            return (int(scale[1]), int(scale[0]))
    size = (cfg.get('model') or {}).get('image_encoder', {}).get('img_size')
    if isinstance(size, int):
        return (size, size)
    return tuple(int(s) for s in size) if size else None
