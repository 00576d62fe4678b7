"""``FusedEncoder``: image files, captions or a data loader -> fused vectors.

It owns the path from user input to the vector search stores and ranks by:
the config's test pipeline (built through ``tbps_mm.registry.TRANSFORMS``),
MMEngine's ``pseudo_collate``, the model's data preprocessor, then one of
two backends behind one interface (``tbps_mm.deployment``):

* ``'pytorch'``: :class:`~tbps_mm.deployment.PyTorchEncoder`, the model;
* ``'onnxruntime'``: :class:`~tbps_mm.deployment.ONNXRuntimeEncoder`, the
  graphs ``tools/deployment/pytorch2onnx.py`` exported from the same
  checkpoint, whose ``fused_embed`` output is used as it is.

The fusion weight lambda belongs to the backend: the model's for PyTorch,
the one recorded at export (``deploy.json``) for onnxruntime;
:attr:`FusedEncoder.fusion_weight` reports it and :meth:`FusedEncoder.fuse`
applies it to embeddings computed elsewhere. Every result carries the fused
vector (``fused_embed``, ``(B, D * (1 + K))``) and the parts it is made of
(``embed``, ``part_embeds``, ``attn``), which explanations draw.

Example:
    >>> encoder = FusedEncoder.from_config('configs/tbps_synth.py',
    ...                                    'tbps_synth.safetensors')
    >>> images = encoder.encode_images(['a.jpg', 'b.jpg'])
    >>> texts = encoder.encode_texts(['a woman in a red coat'])
    >>> scores = texts['fused_embed'] @ images['fused_embed'].T
"""

import hashlib
import json
import os.path as osp
import tempfile
from typing import Dict, Iterable, List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from PIL import Image
from torch import nn

from tbps_mm.deployment import ONNXRuntimeEncoder, PyTorchEncoder
from tbps_mm.fused_score import fused_vector
from tbps_mm.models.checkpoint import file_sha256
from tbps_mm.registry import TRANSFORMS

from .model import init_model

__all__ = ['FusedEncoder', 'BACKENDS', 'find_test_pipeline']

#: What can encode images and captions (the ``backend`` argument).
BACKENDS = ('pytorch', 'onnxruntime')
# Outputs whose last dimension is the caption length (padded when batches of
# different lengths are joined).
_LENGTH_KEYS = ('attn', 'text_ids', 'text_mask')
# The file loader arrays replace, and the colour settings whose result (a BGR
# uint8 image) an RGB array converts to exactly.
_FILE_LOADER = 'LoadImageFromFile'
_COLOUR_TYPES = ('color', 'color_ignore_orientation')


def _sha256_json(value) -> str:
    return hashlib.sha256(
        json.dumps(value, sort_keys=True, default=str).encode()
    ).hexdigest()


def _type_name(transform: dict) -> str:
    kind = transform.get('type')
    name = kind.__name__ if isinstance(kind, type) else str(kind)
    return name.split('.')[-1]


def _without_file_loader(pipeline: list, loaders: list) -> Optional[list]:
    """``pipeline`` with its ``LoadImageFromFile`` steps taken out (nested
    ``transforms`` lists included), appending them to ``loaders``; None when
    a step is not a config or loads other than colour images."""
    kept = []
    for transform in pipeline:
        if not isinstance(transform, dict):
            return None
        transform = dict(transform)
        if _type_name(transform) == _FILE_LOADER:
            if transform.get('color_type', 'color') not in _COLOUR_TYPES:
                return None
            loaders.append(transform)
            continue
        if isinstance(transform.get('transforms'), (list, tuple)):
            inner = _without_file_loader(list(transform['transforms']), loaders)
            if inner is None:
                return None
            transform['transforms'] = inner
        kept.append(transform)
    return kept


def find_test_pipeline(cfg: Config) -> list:
    """The test (else val) dataloader's pipeline, looking through wrappers.

    Args:
        cfg (Config): A tbps_mm config.

    Returns:
        list: The pipeline's transform configs.

    Raises:
        ValueError: The config has neither.
    """
    for loader in ('test_dataloader', 'val_dataloader'):
        dataset = (cfg.get(loader) or {}).get('dataset')
        while isinstance(dataset, dict):
            if dataset.get('pipeline') is not None:
                return list(dataset['pipeline'])
            dataset = dataset.get('dataset')
    filename = getattr(cfg, 'filename', None)
    source = f'config "{filename}"' if filename else 'the config'
    raise ValueError(
        f'{source} has no test_dataloader.dataset.pipeline (or '
        'val_dataloader.dataset.pipeline): images and captions are '
        'pre-processed with it'
    )


def _join(outputs: List[Dict]) -> Dict:
    """Concatenate per-batch outputs along the batch (padding lengths)."""
    if len(outputs) == 1:
        return outputs[0]
    joined = {}
    for key, first in outputs[0].items():
        if not isinstance(first, torch.Tensor):
            joined[key] = first
            continue
        parts = [out[key] for out in outputs]
        if key in _LENGTH_KEYS:
            length = max(p.shape[-1] for p in parts)
            parts = [F.pad(p, (0, length - p.shape[-1])) for p in parts]
        joined[key] = torch.cat(parts)
    return joined


class FusedEncoder:
    """Encode images and captions into the vectors search ranks by.

    Args:
        model (nn.Module): A ``TBPSRetriever`` (see
            :func:`~tbps_mm.apis.init_model`); its data preprocessor always
            runs, and it encodes with ``backend='pytorch'``.
        pipeline (list, optional): Transform configs (or transforms) that
            turn ``dict(img_path=...)`` / ``dict(text=...)`` into packed
            inputs. Defaults to the test pipeline of ``model.cfg``; ``[]``
            when inputs come pre-processed (:meth:`encode_loader`).
        backend (str): ``'pytorch'`` or ``'onnxruntime'``. Defaults to
            ``'pytorch'``.
        onnx_dir (str, optional): The exported folder, for
            ``backend='onnxruntime'`` (and only then).
        batch_size (int): Items per forward pass. Defaults to 32.
        num_threads (int, optional): onnxruntime intra-op threads; None
            lets onnxruntime choose (PyTorch follows
            ``torch.set_num_threads``).

    Raises:
        ValueError: An unknown backend, a missing or extra ``onnx_dir``,
            ``batch_size < 1``, or graphs exported from another checkpoint
            than ``model.checkpoint`` or with another fusion weight than the
            model's.

    Example:
        >>> encoder = FusedEncoder(init_model(cfg, 'model.safetensors'))
        >>> encoder.encode_texts(['a man with a blue backpack'])['fused_embed']
    """

    def __init__(
        self,
        model: nn.Module,
        pipeline: Optional[list] = None,
        backend: str = 'pytorch',
        onnx_dir: Optional[str] = None,
        batch_size: int = 32,
        num_threads: Optional[int] = None,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f'backend must be one of {BACKENDS}, got {backend!r}')
        if (backend == 'onnxruntime') != (onnx_dir is not None):
            raise ValueError(
                "backend='onnxruntime' needs onnx_dir (a folder written by "
                'tools/deployment/pytorch2onnx.py), and only it takes one'
            )
        if batch_size < 1:
            raise ValueError(f'batch_size must be >= 1, got {batch_size}')
        if pipeline is None:
            pipeline = find_test_pipeline(model.cfg)
        self.model = model.eval()
        self.batch_size = int(batch_size)
        #: The transform configs (what an index fingerprints).
        self.pipeline_cfg = [
            t.to_dict() if hasattr(t, 'to_dict') else t for t in pipeline
        ]
        self.pipeline = [
            TRANSFORMS.build(t) if isinstance(t, dict) else t for t in pipeline
        ]
        # The same pipeline for images already in memory: its file loader
        # taken out (None when it cannot be; arrays then go through files).
        loaders: list = []
        array_cfg = _without_file_loader(self.pipeline_cfg, loaders)
        self._array_pipeline = None
        self._array_float32 = False
        if array_cfg is not None and len(loaders) == 1:
            self._array_pipeline = [TRANSFORMS.build(t) for t in array_cfg]
            self._array_float32 = bool(loaders[0].get('to_float32', False))
        tokenize_cls = TRANSFORMS.get('TokenizeCaption')
        tokenizers = [t for t in self.pipeline if isinstance(t, tokenize_cls)]
        # Loaded now: a missing or broken tokenizer fails here, before any
        # image is encoded.
        loaded = [t.tokenizer for t in tokenizers]
        #: The caption tokenizer (None when the pipeline has none).
        self.tokenizer = loaded[0] if loaded else None
        device = next(model.parameters()).device
        if backend == 'pytorch':
            self.backend = PyTorchEncoder(model)
        else:
            self.backend = ONNXRuntimeEncoder(
                onnx_dir, num_threads=num_threads, device=str(device)
            )
            self._check_export(onnx_dir)

    @classmethod
    def from_config(
        cls,
        config: Union[str, Config],
        checkpoint: str,
        device: str = 'cpu',
        cfg_options: Optional[dict] = None,
        trust_checkpoint: bool = False,
        **kwargs,
    ) -> 'FusedEncoder':
        """Build the model with :func:`~tbps_mm.apis.init_model` and wrap it.

        Args:
            config (str | Config): The config.
            checkpoint (str): Its weights (see ``init_model``).
            device (str): Torch device. Defaults to ``'cpu'``.
            cfg_options (dict, optional): Config overrides.
            trust_checkpoint (bool): See ``init_model``.
            **kwargs: ``pipeline``, ``backend``, ``onnx_dir``, ``batch_size``,
                ``num_threads``.

        Returns:
            FusedEncoder: The encoder.
        """
        model = init_model(
            config,
            checkpoint,
            device=device,
            cfg_options=cfg_options,
            trust_checkpoint=trust_checkpoint,
        )
        return cls(model, **kwargs)

    def _check_export(self, onnx_dir: str) -> None:
        """Graphs from another checkpoint or lambda than the model's: refused
        (the graph's ``fused_embed`` is used as it is, never re-fused)."""
        exported_weight = self.backend.fusion_weight
        if float(self.model.fusion_weight) != exported_weight:
            raise ValueError(
                f'the ONNX graphs in "{onnx_dir}" fuse with fusion_weight '
                f'{exported_weight} (deploy.json) but the config says '
                f'{float(self.model.fusion_weight)}: export the model again '
                'with this config'
            )
        checkpoint = getattr(self.model, 'checkpoint', None)
        if checkpoint is None:
            return
        exported_from = self.backend.meta.get('checkpoint_sha256')
        expected = file_sha256(checkpoint)
        if exported_from != expected:
            raise ValueError(
                f'the ONNX graphs in "{onnx_dir}" were exported from another '
                f'checkpoint (sha256 {exported_from}) than "{checkpoint}" '
                f'(sha256 {expected}): export this checkpoint again'
            )

    @property
    def backend_name(self) -> str:
        """``'pytorch'`` or ``'onnxruntime'``."""
        return self.backend.name

    @property
    def fusion_weight(self) -> float:
        """lambda of the fused vectors this encoder gives (the backend's)."""
        return self.backend.fusion_weight

    @property
    def fingerprints(self) -> Dict[str, str]:
        """What vectors stored for later search must have been encoded with.

        ``model``: SHA-256 of the checkpoint's bytes and the model config;
        ``pipeline``: SHA-256 of the test pipeline config. Stored indexes
        (image galleries, video tracks) record them and are rebuilt or
        refused when they differ. Both backends of one checkpoint give the
        same vectors (``tools/deployment/pytorch2onnx.py`` checks it), so
        the backend is not part of it.

        Raises:
            ValueError: The model was not loaded from a checkpoint.
        """
        checkpoint = getattr(self.model, 'checkpoint', None)
        if checkpoint is None:
            raise ValueError(
                'the model was not loaded from a checkpoint: its vectors '
                'cannot be stored for later search'
            )
        model_cfg = self.model.cfg.model
        if hasattr(model_cfg, 'to_dict'):
            model_cfg = model_cfg.to_dict()
        return dict(
            model=_sha256_json(
                dict(checkpoint=file_sha256(checkpoint), model=model_cfg)
            ),
            pipeline=_sha256_json(self.pipeline_cfg),
        )

    # ------------------------------------------------------------------ #
    # Tensors in, vectors out
    # ------------------------------------------------------------------ #
    def encode_image_tensors(self, images: torch.Tensor) -> Dict:
        """Encode a batch of normalised images with the backend.

        Args:
            images (Tensor): (B, 3, H, W), as the data preprocessor gives them.

        Returns:
            dict: ``fused_embed``, ``embed``, ``part_embeds``, ``attn`` (when
            the backend has it) and ``attn_hw``.
        """
        return self.backend.encode_image(images)

    def encode_token_ids(self, text_ids: torch.Tensor, text_mask: torch.Tensor) -> Dict:
        """Encode a batch of token ids with the backend.

        Args:
            text_ids (Tensor): (B, L) token ids.
            text_mask (Tensor): (B, L), 1 for real tokens, 0 for padding.

        Returns:
            dict: ``fused_embed``, ``embed``, ``part_embeds`` and ``attn``
            (when the backend has it).
        """
        return self.backend.encode_text(text_ids, text_mask)

    def fuse(self, embed: torch.Tensor, part_embeds: torch.Tensor) -> torch.Tensor:
        """Fused vectors of embeddings computed elsewhere, with this lambda.

        Args:
            embed (Tensor): (B, D) coarse embeddings.
            part_embeds (Tensor): (B, K, D) part embeddings.

        Returns:
            Tensor: (B, D * (1 + K)) (``(B, D)`` when K = 0 or lambda = 0).
        """
        return fused_vector(embed, part_embeds, self.fusion_weight)

    # ------------------------------------------------------------------ #
    # Files and captions
    # ------------------------------------------------------------------ #
    def prepare(self, item: dict) -> dict:
        """Run the pipeline on one item.

        Raises:
            ValueError: The pipeline dropped the item.
        """
        for transform in self.pipeline:
            item = transform(item)
            if item is None:
                raise ValueError('the pipeline dropped the item')
        return item

    def _inputs(self, items: List[dict]) -> dict:
        batch = self.model.data_preprocessor(pseudo_collate(items), False)
        return batch['inputs']

    @torch.no_grad()
    def encode_images(
        self, paths: Sequence[str], skipped: Optional[list] = None
    ) -> Optional[Dict]:
        """Encode image files, ``batch_size`` at a time.

        Args:
            paths (Sequence[str]): Image files.
            skipped (list, optional): When given, images that cannot be read
                are left out and ``(path, reason)`` appended here; the rows
                returned follow the readable paths in order. When None, an
                unreadable image raises.

        Returns:
            dict | None: ``fused_embed`` (B, F), ``embed`` (B, D),
            ``part_embeds`` (B, K, D), ``attn`` (B, K, N) (when the backend
            has it), ``attn_hw`` and ``paths`` (the files encoded, in row
            order); None when ``skipped`` is given and no image was readable.
        """
        outputs = []
        encoded: List[str] = []
        for start in range(0, len(paths), self.batch_size):
            items, names = [], []
            for i, path in enumerate(paths[start : start + self.batch_size]):
                item = dict(img_path=path, modality='image', sample_idx=i)
                if skipped is None:
                    items.append(self.prepare(item))
                else:
                    try:
                        items.append(self.prepare(item))
                    except Exception as err:  # noqa: BLE001 - user files: skip, name
                        skipped.append((path, f'{type(err).__name__}: {err}'))
                        continue
                names.append(path)
            if items:
                outputs.append(self.encode_image_tensors(self._inputs(items)['images']))
                encoded.extend(names)
        if not outputs:
            if skipped is None:
                raise ValueError('no image paths given')
            return None
        out = _join(outputs)
        out['paths'] = encoded
        return out

    @torch.no_grad()
    def encode_image_arrays(
        self, images: Sequence[np.ndarray], names: Optional[Sequence[str]] = None
    ) -> Dict:
        """Encode images held in memory (crops of video frames, say).

        Each image goes through the test pipeline as a file would, with the
        pipeline's ``LoadImageFromFile`` step replaced by the array itself
        (converted to the BGR ``uint8`` image that step gives). A pipeline
        whose loader cannot be replaced that way (another loader, a
        non-colour ``color_type``, transform objects instead of configs)
        gets the images as lossless PNG files in a temporary folder, so
        both routes see the same pixels.

        Args:
            images (Sequence[np.ndarray]): (H, W, 3) ``uint8`` RGB images.
            names (Sequence[str], optional): What errors call each image.
                Defaults to ``'image <i>'``.

        Returns:
            dict: As :meth:`encode_images`, without ``paths``.

        Raises:
            ValueError: No image, or one that is not (H, W, 3) ``uint8``
                (named).

        Example:
            >>> crops = [frame[y0:y1, x0:x1] for (x0, y0, x1, y1) in boxes]
            >>> encoder.encode_image_arrays(crops)['fused_embed'].shape
            torch.Size([len(boxes), 1536])
        """
        if not len(images):
            raise ValueError('no image given')
        if names is None:
            names = [f'image {i}' for i in range(len(images))]
        arrays = []
        for name, image in zip(names, images):
            image = np.asarray(image)
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(
                    f'{name}: expected an (H, W, 3) uint8 RGB image, got '
                    f'{image.dtype} of shape {image.shape}'
                )
            if not image.shape[0] or not image.shape[1]:
                raise ValueError(f'{name}: the image is empty ({image.shape})')
            arrays.append(image)
        if self._array_pipeline is None:
            with tempfile.TemporaryDirectory(prefix='tbps_arrays_') as folder:
                paths = []
                for i, image in enumerate(arrays):
                    paths.append(osp.join(folder, f'{i:06d}.png'))
                    Image.fromarray(image).save(paths[-1])
                out = self.encode_images(paths)
            out.pop('paths')
            return out
        outputs = []
        for start in range(0, len(arrays), self.batch_size):
            items = []
            for i, image in enumerate(arrays[start : start + self.batch_size]):
                bgr = np.ascontiguousarray(image[..., ::-1])
                if self._array_float32:
                    bgr = bgr.astype(np.float32)
                item = dict(
                    img_path=names[start + i],
                    img=bgr,
                    img_shape=bgr.shape[:2],
                    ori_shape=bgr.shape[:2],
                    modality='image',
                    sample_idx=i,
                )
                for transform in self._array_pipeline:
                    item = transform(item)
                    if item is None:
                        raise ValueError(
                            f'{names[start + i]}: the pipeline dropped the image'
                        )
                items.append(item)
            outputs.append(self.encode_image_tensors(self._inputs(items)['images']))
        return _join(outputs)

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str]) -> Dict:
        """Encode captions, ``batch_size`` at a time.

        Args:
            texts (Sequence[str]): Descriptions of people.

        Returns:
            dict: ``fused_embed`` (B, F), ``embed``, ``part_embeds``,
            ``attn`` (B, K, L) (when the backend has it), and ``text_ids`` /
            ``text_mask`` (B, L): the token columns the model saw.

        Raises:
            ValueError: No caption, or an empty one.
        """
        if isinstance(texts, str):
            texts = [texts]
        if not texts:
            raise ValueError('no caption given')
        for text in texts:
            if not isinstance(text, str) or not text.strip():
                raise ValueError(
                    f'the text query is empty ({text!r}): describe the person to find'
                )
        outputs = []
        for start in range(0, len(texts), self.batch_size):
            items = [
                self.prepare(dict(text=text, modality='text', sample_idx=i))
                for i, text in enumerate(texts[start : start + self.batch_size])
            ]
            inputs = self._inputs(items)
            out = self.encode_token_ids(inputs['text_ids'], inputs['text_mask'])
            out['text_ids'], out['text_mask'] = inputs['text_ids'], inputs['text_mask']
            outputs.append(out)
        return _join(outputs)

    @torch.no_grad()
    def encode_loader(self, loader: Iterable) -> Dict[str, Dict]:
        """Encode every image and caption a data loader gives.

        For evaluation splits, whose loader (the config's
        ``test_dataloader``) gives the gallery images and the caption
        queries in one stream.

        Args:
            loader (Iterable): Batches of packed items (``pseudo_collate``d
                ``inputs`` / ``data_samples``).

        Returns:
            dict: ``images`` and ``texts``, each with the backend's outputs
            joined over the loader (``attn_hw`` for images) and
            ``data_samples`` (the samples of those rows, in order); a side
            the loader never gave is an empty dict.
        """
        sides: Dict[str, list] = dict(images=[], texts=[])
        samples: Dict[str, list] = dict(images=[], texts=[])
        for batch in loader:
            data = self.model.data_preprocessor(batch, False)
            inputs, data_samples = data['inputs'], data['data_samples']
            if inputs.get('images') is not None:
                sides['images'].append(self.encode_image_tensors(inputs['images']))
                samples['images'] += [
                    data_samples[i] for i in inputs['image_index'].tolist()
                ]
            if inputs.get('text_ids') is not None:
                sides['texts'].append(
                    self.encode_token_ids(inputs['text_ids'], inputs['text_mask'])
                )
                samples['texts'] += [
                    data_samples[i] for i in inputs['text_index'].tolist()
                ]
        result = {}
        for side, outputs in sides.items():
            result[side] = (
                dict(_join(outputs), data_samples=samples[side]) if outputs else {}
            )
        return result
