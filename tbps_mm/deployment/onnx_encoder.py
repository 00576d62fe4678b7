"""``ONNXRuntimeEncoder``: encode images and captions with exported graphs.

It reads a folder written by :func:`~tbps_mm.deployment.export_onnx` and
answers ``encode_image`` / ``encode_text`` with the same dictionaries as
:class:`~tbps_mm.deployment.PyTorchEncoder` (``fused_embed``, ``embed``,
``part_embeds``, ``attn`` when the graphs have it, ``attn_hw`` for images),
as torch tensors: it is the onnxruntime backend of
``tbps_mm.apis.FusedEncoder``. ``fused_embed`` is the graph's own output and
the fusion weight the one recorded at export (``deploy.json``); nothing is
fused again here.

The checks the model runs on its inputs (image size, token ids inside the
vocabulary, caption length within the positions) are repeated here, because
the exported graphs do not carry them.
"""

import json
import os.path as osp
from typing import Dict, Optional, Sequence

import numpy as np
import torch

from .onnx_export import DEPLOY_FORMAT, DEPLOY_META_FILE, DEPLOY_VERSION

__all__ = ['ONNXRuntimeEncoder', 'read_deploy_meta']


def read_deploy_meta(onnx_dir: str) -> dict:
    """Read and check ``deploy.json`` of an exported folder.

    Args:
        onnx_dir (str): The folder ``export_onnx`` wrote.

    Returns:
        dict: The metadata.

    Raises:
        FileNotFoundError: The folder, its ``deploy.json`` or a graph file is
            missing.
        ValueError: ``deploy.json`` is not a tbps_mm export of this version.
    """
    path = osp.join(onnx_dir, DEPLOY_META_FILE)
    if not osp.isdir(onnx_dir):
        raise FileNotFoundError(f'ONNX folder "{onnx_dir}" does not exist')
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'"{path}" does not exist: export the model with '
            'tools/deployment/pytorch2onnx.py first'
        )
    with open(path, encoding='utf-8') as f:
        try:
            meta = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f'"{path}" is not valid JSON: {err}') from err
    if meta.get('format') != DEPLOY_FORMAT or meta.get('version') != DEPLOY_VERSION:
        raise ValueError(
            f'"{path}" is not a {DEPLOY_FORMAT} version {DEPLOY_VERSION} file '
            f'(format={meta.get("format")!r}, version={meta.get("version")!r})'
        )
    for side in ('image', 'text'):
        graph = osp.join(onnx_dir, meta[side]['file'])
        if not osp.isfile(graph):
            raise FileNotFoundError(f'the {side} graph "{graph}" does not exist')
    return meta


class ONNXRuntimeEncoder:
    """The image and text encoders of an exported model, on onnxruntime.

    Args:
        onnx_dir (str): A folder written by ``export_onnx``.
        providers (Sequence[str], optional): onnxruntime execution providers.
            Defaults to ``('CPUExecutionProvider',)``.
        num_threads (int, optional): Intra-op threads; None lets onnxruntime
            choose.
        device (str): Torch device the returned tensors are put on.
            Defaults to ``'cpu'``.

    Raises:
        FileNotFoundError, ValueError: See :func:`read_deploy_meta`.

    Example:
        >>> encoder = ONNXRuntimeEncoder('deploy/')
        >>> out = encoder.encode_text(ids, mask)
        >>> out['fused_embed'].shape
        torch.Size([1, 1280])
    """

    #: The name ``FusedEncoder`` knows this backend by.
    name = 'onnxruntime'

    def __init__(
        self,
        onnx_dir: str,
        providers: Optional[Sequence[str]] = None,
        num_threads: Optional[int] = None,
        device: str = 'cpu',
    ) -> None:
        import onnxruntime as ort

        self.onnx_dir = onnx_dir
        self.meta = read_deploy_meta(onnx_dir)
        self.device = torch.device(device)
        options = ort.SessionOptions()
        if num_threads is not None:
            options.intra_op_num_threads = int(num_threads)
        providers = list(providers or ('CPUExecutionProvider',))
        self.ort_sessions = {
            side: ort.InferenceSession(
                osp.join(onnx_dir, self.meta[side]['file']),
                sess_options=options,
                providers=providers,
            )
            for side in ('image', 'text')
        }
        #: lambda the graphs' ``fused_embed`` was exported with.
        self.fusion_weight = float(self.meta['fusion_weight'])
        self.with_attention = self.meta['with_attention']

    def _outputs(self, side: str, feeds: Dict[str, np.ndarray]) -> Dict:
        values = self.ort_sessions[side].run(None, feeds)
        return {
            name: torch.from_numpy(value).to(self.device)
            for name, value in zip(self.meta['outputs'], values)
        }

    def encode_image(self, images: torch.Tensor) -> Dict:
        """Encode normalised images, like ``TBPSRetriever.encode_image``.

        Args:
            images (Tensor): (B, 3, H, W) at the exported image size.

        Returns:
            dict: ``fused_embed``, ``embed``, ``part_embeds``, ``attn`` (when
            exported with attention) and ``attn_hw``.

        Raises:
            ValueError: Images of another shape than the exported one.
        """
        height, width = self.meta['image']['image_size']
        if images.dim() != 4 or tuple(images.shape[1:]) != (3, height, width):
            raise ValueError(
                f'the ONNX image encoder in "{self.onnx_dir}" takes (B, 3, {height}, '
                f'{width}) images, got {tuple(images.shape)}: resize them as the '
                "config's test pipeline does"
            )
        feeds = dict(images=images.detach().float().cpu().numpy())
        out = self._outputs('image', feeds)
        hw = self.meta['image']['attn_hw']
        out['attn_hw'] = tuple(hw) if hw is not None else None
        return out

    def encode_text(self, text_ids: torch.Tensor, text_mask: torch.Tensor) -> Dict:
        """Encode token ids, like ``TBPSRetriever.encode_text``.

        Args:
            text_ids (Tensor): (B, L) token ids.
            text_mask (Tensor): (B, L), 1 for real tokens, 0 for padding.

        Returns:
            dict: ``fused_embed``, ``embed``, ``part_embeds`` and ``attn``
            (when exported with attention).

        Raises:
            ValueError: Shapes that differ, a caption longer than the text
                encoder's positions, or a token id outside its vocabulary.
        """
        info = self.meta['text']
        if text_ids.dim() != 2 or text_mask.shape != text_ids.shape:
            raise ValueError(
                'text_ids and text_mask must be (B, L) of one shape, got '
                f'{tuple(text_ids.shape)} and {tuple(text_mask.shape)}'
            )
        if info['max_length'] is not None and text_ids.shape[1] > info['max_length']:
            raise ValueError(
                f'captions are {text_ids.shape[1]} tokens long but the exported '
                f'text encoder has {info["max_length"]} positions'
            )
        if text_ids.numel() and (
            int(text_ids.max()) >= info['vocab_size'] or int(text_ids.min()) < 0
        ):
            raise ValueError(
                f'token ids must lie in [0, {info["vocab_size"]}) (the exported '
                f'vocabulary), got [{int(text_ids.min())}, {int(text_ids.max())}]'
            )
        feeds = dict(
            text_ids=text_ids.detach().long().cpu().numpy(),
            text_mask=text_mask.detach().long().cpu().numpy(),
        )
        return self._outputs('text', feeds)
