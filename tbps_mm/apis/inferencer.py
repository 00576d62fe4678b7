"""``TBPSInferencer``: search your own image folder with free text.

It owns the user-facing inference path: build a TBPS model from a config and
a *weights-only* checkpoint (read safely: safetensors or
``torch.load(weights_only=True)``, through the model package's
``load_tbps_weights``, which names every key that does not fit), encode a
folder of images once into an index file, answer text queries with ranked
paths and scores, and explain a match part by part.

The index file (``.npz``, read with ``allow_pickle=False``) holds the coarse
and part embeddings of every readable image and a JSON header whose key is a
hash of the folder's file list (relative paths, sizes, modification times),
of the checkpoint's bytes and of the model and test-pipeline config. A change
to any of them rebuilds the index. It is written to a temporary file in the
same folder and moved into place with ``os.replace``, so a crash never leaves
a partial index behind. Images that cannot be read are skipped, counted and
named in the log and in the index header.

Image and caption pre-processing is the config's ``test_dataloader`` pipeline
(built through ``tbps_mm.registry.TRANSFORMS``), batched with MMEngine's
``pseudo_collate`` and the model's own data preprocessor, so inference sees
exactly what evaluation sees. Encoding runs on the model, or, with
``backend='onnxruntime'``, on the graphs that
``tools/deployment/pytorch2onnx.py`` exported from the same checkpoint.

Example:
    >>> inferencer = TBPSInferencer('configs/tbps_synth.py',
    ...                             'tbps_synth.safetensors')
    >>> inferencer.index('my_photos/')
    >>> inferencer('a woman in a red coat with a black backpack', topk=5)
    [('my_photos/cam1/0042.jpg', 1.53), ...]
"""

import hashlib
import json
import os
import os.path as osp
import tempfile
import zipfile
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.logging import print_log
from tqdm import tqdm

from tbps_mm.models.checkpoint import (
    INFERENCE_IGNORED_PREFIXES,
    file_sha256,
    load_tbps_weights,
)
from tbps_mm.registry import MODELS, TRANSFORMS
from tbps_mm.visualization import draw_part_explanation

__all__ = ['TBPSInferencer', 'IMAGE_EXTENSIONS', 'DEFAULT_INDEX_NAME']

#: File extensions (lower case) that :meth:`TBPSInferencer.index` encodes.
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff', '.ppm')
#: Index file name used inside the image folder when none is given.
DEFAULT_INDEX_NAME = '.tbps_mm_index.npz'
INDEX_FORMAT = 'tbps_mm-image-index'
INDEX_VERSION = 1
#: What can encode images and captions (the ``backend`` argument).
BACKENDS = ('pytorch', 'onnxruntime')


def _find_pipeline(cfg: Config, source: str) -> list:
    """The test (else val) dataloader's pipeline, looking through wrappers."""
    for loader in ('test_dataloader', 'val_dataloader'):
        dataset = (cfg.get(loader) or {}).get('dataset')
        while isinstance(dataset, dict):
            if dataset.get('pipeline') is not None:
                return list(dataset['pipeline'])
            dataset = dataset.get('dataset')
    raise ValueError(
        f'config {source} has no test_dataloader.dataset.pipeline (or '
        'val_dataloader.dataset.pipeline): the inferencer pre-processes images '
        'and captions with it'
    )


class TBPSInferencer:
    """Index a folder of images and search it with text queries.

    Args:
        config (str | Config): A tbps_mm config (file path or object) with a
            ``model`` and a ``test_dataloader`` pipeline.
        checkpoint (str): A weights-only checkpoint (``.safetensors`` or a
            state dict that ``torch.load(weights_only=True)`` reads).
        device (str): Torch device. Defaults to ``'cpu'``.
        batch_size (int): Images per forward pass when indexing. Defaults
            to 32.
        show_progress (bool): Show a progress bar while indexing. Defaults
            to True.
        backend (str): What encodes images and captions: ``'pytorch'`` (the
            model) or ``'onnxruntime'`` (the graphs exported from the same
            checkpoint into ``onnx_dir``). Pre-processing, ranking and the
            index are the same for both. Defaults to ``'pytorch'``.
        onnx_dir (str, optional): The exported folder, for
            ``backend='onnxruntime'``.

    Raises:
        FileNotFoundError: The config or checkpoint file does not exist.
        CheckpointMismatchError: The checkpoint does not fit the config
            (every misfit key named).
        ValueError: An unknown backend, or ONNX graphs exported from another
            checkpoint.

    Example:
        >>> inferencer = TBPSInferencer(cfg, 'model.safetensors', device='cuda')
        >>> summary = inferencer.index('gallery/', index_file='gallery.npz')
        >>> results = inferencer.search('a man with a blue backpack', topk=10)
        >>> explanation = inferencer.explain('a man with a blue backpack',
        ...                                  results[0][0])
    """

    def __init__(
        self,
        config: Union[str, Config],
        checkpoint: str,
        device: str = 'cpu',
        batch_size: int = 32,
        show_progress: bool = True,
        backend: str = 'pytorch',
        onnx_dir: Optional[str] = None,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f'backend must be one of {BACKENDS}, got {backend!r}')
        if (backend == 'onnxruntime') != (onnx_dir is not None):
            raise ValueError(
                "backend='onnxruntime' needs onnx_dir (a folder written by "
                'tools/deployment/pytorch2onnx.py), and only it takes one'
            )
        if isinstance(config, str):
            if not osp.isfile(config):
                raise FileNotFoundError(f'config file "{config}" does not exist')
            source = f'"{config}"'
            config = Config.fromfile(config)
        else:
            source = '(Config object)'
        if config.get('model') is None:
            raise ValueError(f'config {source} has no "model" entry')
        if not isinstance(checkpoint, str) or not osp.isfile(checkpoint):
            raise FileNotFoundError(f'checkpoint file "{checkpoint}" does not exist')
        if batch_size < 1:
            raise ValueError(f'batch_size must be >= 1, got {batch_size}')
        self.cfg = config
        self.checkpoint = checkpoint
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.show_progress = show_progress

        pipeline_cfg = _find_pipeline(config, source)
        self.pipeline = [
            TRANSFORMS.build(t) if isinstance(t, dict) else t for t in pipeline_cfg
        ]
        tokenize_cls = TRANSFORMS.get('TokenizeCaption')
        tokenizers = [t for t in self.pipeline if isinstance(t, tokenize_cls)]
        self._tokenize = tokenizers[0] if tokenizers else None

        self.model = MODELS.build(config.model)
        load_tbps_weights(
            self.model, checkpoint, ignore_prefixes=INFERENCE_IGNORED_PREFIXES
        )
        self.model.to(self.device).eval()
        self.checkpoint_sha256 = file_sha256(checkpoint)
        self.encoder = self._build_encoder(backend, onnx_dir)
        self.model_key = hashlib.sha256(
            json.dumps(
                dict(
                    checkpoint=self.checkpoint_sha256,
                    model=config.model.to_dict()
                    if hasattr(config.model, 'to_dict')
                    else config.model,
                    pipeline=pipeline_cfg,
                ),
                sort_keys=True,
                default=str,
            ).encode()
        ).hexdigest()

        self.paths: List[str] = []
        self._gallery: Optional[Dict[str, torch.Tensor]] = None

    # ------------------------------------------------------------------ #
    # Encoding
    # ------------------------------------------------------------------ #
    def _build_encoder(self, backend: str, onnx_dir: Optional[str]):
        """What ``encode_image`` / ``encode_text`` go through: the model, or
        an :class:`ONNXRuntimeEncoder` with the same outputs."""
        if backend == 'pytorch':
            return self.model
        from tbps_mm.deployment import ONNXRuntimeEncoder

        encoder = ONNXRuntimeEncoder(onnx_dir, device=str(self.device))
        exported_from = encoder.meta.get('checkpoint_sha256')
        if exported_from != self.checkpoint_sha256:
            raise ValueError(
                f'the ONNX graphs in "{onnx_dir}" were exported from another '
                f'checkpoint (sha256 {exported_from}) than "{self.checkpoint}" '
                f'(sha256 {self.checkpoint_sha256}): export this checkpoint again'
            )
        return encoder

    def _prepare(self, item: dict) -> dict:
        for transform in self.pipeline:
            item = transform(item)
            if item is None:
                raise ValueError('the pipeline dropped the item')
        return item

    def _forward(self, items: List[dict]) -> dict:
        """Pre-process packed items and return the data preprocessor's inputs."""
        batch = self.model.data_preprocessor(pseudo_collate(items), False)
        return batch['inputs']

    @torch.no_grad()
    def encode_images(self, paths: Sequence[str]) -> Dict[str, torch.Tensor]:
        """Encode images (all must be readable).

        Args:
            paths (Sequence[str]): Image files.

        Returns:
            dict: ``embed`` (B, D), ``part_embeds`` (B, K, D), ``attn``
            (B, K, N) and ``attn_hw``, as ``TBPSRetriever.encode_image``.
        """
        items = [
            self._prepare(dict(img_path=p, modality='image', sample_idx=i))
            for i, p in enumerate(paths)
        ]
        return self.encoder.encode_image(self._forward(items)['images'])

    @torch.no_grad()
    def encode_text(self, query: str) -> Tuple[Dict[str, torch.Tensor], dict]:
        """Encode one caption.

        Args:
            query (str): The text query.

        Returns:
            tuple[dict, dict]: ``TBPSRetriever.encode_text``'s output (batch
            of 1) and the data preprocessor's ``inputs`` it was computed from
            (``text_ids`` / ``text_mask`` (1, L), the columns the model saw).

        Raises:
            ValueError: An empty query.
        """
        if not isinstance(query, str) or not query.strip():
            raise ValueError(
                f'the text query is empty ({query!r}): describe the person to find'
            )
        item = self._prepare(dict(text=query, modality='text', sample_idx=0))
        inputs = self._forward([item])
        return self.encoder.encode_text(inputs['text_ids'], inputs['text_mask']), inputs

    # ------------------------------------------------------------------ #
    # Index
    # ------------------------------------------------------------------ #
    @staticmethod
    def list_images(image_dir: str) -> List[str]:
        """Image files under ``image_dir`` (recursive), relative, sorted."""
        found = []
        for root, dirs, files in os.walk(image_dir):
            dirs.sort()
            for name in files:
                if name.lower().endswith(IMAGE_EXTENSIONS):
                    found.append(osp.relpath(osp.join(root, name), image_dir))
        return sorted(found)

    def _folder_key(self, image_dir: str, files: List[str]) -> str:
        listing = []
        for rel in files:
            stat = os.stat(osp.join(image_dir, rel))
            listing.append([rel, stat.st_size, stat.st_mtime_ns])
        return hashlib.sha256(
            json.dumps(dict(files=listing, model=self.model_key)).encode()
        ).hexdigest()

    def index(
        self,
        image_dir: str,
        index_file: Optional[str] = None,
        batch_size: Optional[int] = None,
        rebuild: bool = False,
    ) -> dict:
        """Encode every image of a folder once, or load its up-to-date index.

        Args:
            image_dir (str): The folder (searched recursively for
                :data:`IMAGE_EXTENSIONS`).
            index_file (str, optional): Where the index lives. Defaults to
                ``<image_dir>/.tbps_mm_index.npz``.
            batch_size (int, optional): Images per forward pass. Defaults to
                the inferencer's ``batch_size``.
            rebuild (bool): Encode again even if the index is up to date.

        Returns:
            dict: ``num_images`` (indexed), ``skipped`` (list of
            ``(relative path, reason)``), ``loaded`` (True when an existing
            index was reused) and ``index_file``.

        Raises:
            FileNotFoundError: ``image_dir`` is not a folder.
            ValueError: The folder holds no image, or none is readable.
        """
        if not osp.isdir(image_dir):
            raise FileNotFoundError(f'image folder "{image_dir}" does not exist')
        image_dir = osp.abspath(image_dir)
        files = self.list_images(image_dir)
        if not files:
            raise ValueError(
                f'image folder "{image_dir}" holds no images (looked recursively '
                f'for {", ".join(IMAGE_EXTENSIONS)})'
            )
        index_file = osp.abspath(index_file or osp.join(image_dir, DEFAULT_INDEX_NAME))
        key = self._folder_key(image_dir, files)

        cached = None if rebuild else self._read_index(index_file, key)
        if cached is not None:
            embed, parts, meta = cached
            loaded = True
            print_log(
                f'Loaded the index of {len(meta["files"])} images from "{index_file}"',
                logger='current',
            )
        else:
            embed, parts, meta = self._build_index(
                image_dir, files, key, batch_size or self.batch_size
            )
            loaded = False
            self._write_index(index_file, embed, parts, meta)
        skipped = [tuple(s) for s in meta['skipped']]
        if skipped:
            names = ', '.join(name for name, _ in skipped)
            print_log(
                f'{len(skipped)} of {len(files)} images in "{image_dir}" could '
                f'not be read and are not searchable: {names}',
                logger='current',
                level=30,
            )
        self.set_gallery(
            [osp.join(image_dir, rel) for rel in meta['files']],
            torch.from_numpy(embed),
            torch.from_numpy(parts),
        )
        return dict(
            num_images=len(self.paths),
            skipped=skipped,
            loaded=loaded,
            index_file=index_file,
        )

    def _build_index(
        self, image_dir: str, files: List[str], key: str, batch_size: int
    ) -> Tuple[np.ndarray, np.ndarray, dict]:
        kept: List[str] = []
        skipped: List[Tuple[str, str]] = []
        embeds, parts = [], []
        progress = tqdm(
            total=len(files),
            desc='Indexing images',
            unit='img',
            disable=not self.show_progress,
        )
        with torch.no_grad():
            for start in range(0, len(files), batch_size):
                items, names = [], []
                for rel in files[start : start + batch_size]:
                    path = osp.join(image_dir, rel)
                    try:
                        item = dict(img_path=path, modality='image', sample_idx=0)
                        items.append(self._prepare(item))
                        names.append(rel)
                    except Exception as err:  # noqa: BLE001 - user files: skip, count, name
                        skipped.append((rel, f'{type(err).__name__}: {err}'))
                if items:
                    out = self.encoder.encode_image(self._forward(items)['images'])
                    embeds.append(out['embed'].float().cpu().numpy())
                    parts.append(out['part_embeds'].float().cpu().numpy())
                    kept.extend(names)
                progress.update(len(files[start : start + batch_size]))
        progress.close()
        if not kept:
            raise ValueError(
                f'none of the {len(files)} images in "{image_dir}" could be read; '
                f'first error: {skipped[0][0]}: {skipped[0][1]}'
            )
        meta = dict(
            format=INDEX_FORMAT,
            version=INDEX_VERSION,
            key=key,
            files=kept,
            skipped=[list(s) for s in skipped],
        )
        return np.concatenate(embeds), np.concatenate(parts), meta

    @staticmethod
    def _read_index(
        index_file: str, key: str
    ) -> Optional[Tuple[np.ndarray, np.ndarray, dict]]:
        """The index at ``index_file`` if it is readable and has ``key``."""
        if not osp.isfile(index_file):
            return None
        try:
            with np.load(index_file, allow_pickle=False) as data:
                meta = json.loads(str(data['meta']))
                if (
                    meta.get('format') != INDEX_FORMAT
                    or meta.get('version') != INDEX_VERSION
                    or meta.get('key') != key
                ):
                    print_log(
                        f'The index "{index_file}" is out of date (images, '
                        'checkpoint or config changed): rebuilding it',
                        logger='current',
                    )
                    return None
                embed, parts = data['embed'], data['part_embeds']
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
            print_log(
                f'The index "{index_file}" cannot be read ({type(err).__name__}: '
                f'{err}): rebuilding it',
                logger='current',
                level=30,
            )
            return None
        if embed.shape[0] != len(meta['files']) or parts.shape[0] != len(meta['files']):
            print_log(
                f'The index "{index_file}" is inconsistent: rebuilding it',
                logger='current',
                level=30,
            )
            return None
        return embed, parts, meta

    @staticmethod
    def _write_index(
        index_file: str, embed: np.ndarray, parts: np.ndarray, meta: dict
    ) -> None:
        """Write the index atomically (temporary file + ``os.replace``)."""
        folder = osp.dirname(index_file)
        try:
            os.makedirs(folder, exist_ok=True)
            fd, tmp = tempfile.mkstemp(
                prefix=osp.basename(index_file) + '.', suffix='.tmp', dir=folder
            )
        except OSError as err:
            print_log(
                f'Cannot write the index "{index_file}" ({err}); continuing '
                'without a cached index',
                logger='current',
                level=30,
            )
            return
        try:
            with os.fdopen(fd, 'wb') as f:
                np.savez(
                    f,
                    embed=embed,
                    part_embeds=parts,
                    meta=np.array(json.dumps(meta)),
                )
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, index_file)
        except BaseException:
            if osp.exists(tmp):
                os.remove(tmp)
            raise
        print_log(
            f'Wrote the index of {len(meta["files"])} images to "{index_file}"',
            logger='current',
        )

    def set_gallery(
        self, paths: Sequence[str], embed: torch.Tensor, part_embeds: torch.Tensor
    ) -> None:
        """Search these pre-computed image embeddings (what :meth:`index` does
        once it has them; useful for embeddings computed elsewhere).

        Args:
            paths (Sequence[str]): One path (or any name) per image.
            embed (Tensor): (N, D) L2-normalised coarse embeddings.
            part_embeds (Tensor): (N, K, D) L2-normalised part embeddings.

        Raises:
            ValueError: Shapes that do not fit together.
        """
        if embed.dim() != 2 or part_embeds.dim() != 3:
            raise ValueError(
                f'embed must be (N, D) and part_embeds (N, K, D), got '
                f'{tuple(embed.shape)} and {tuple(part_embeds.shape)}'
            )
        if not len(paths) == embed.shape[0] == part_embeds.shape[0]:
            raise ValueError(
                f'{len(paths)} paths, {embed.shape[0]} embeddings and '
                f'{part_embeds.shape[0]} part embeddings: one of each per image'
            )
        self.paths = list(paths)
        self._gallery = dict(
            embed=embed.to(self.device), part_embeds=part_embeds.to(self.device)
        )

    # ------------------------------------------------------------------ #
    # Search and explanation
    # ------------------------------------------------------------------ #
    def search(self, query: str, topk: int = 10) -> List[Tuple[str, float]]:
        """The indexed images that best match ``query``.

        Args:
            query (str): Free-text description of a person.
            topk (int): Results wanted (at most the number of images).

        Returns:
            list[tuple[str, float]]: ``(path, score)``, best first; the score
            is the model's fused similarity.

        Raises:
            ValueError: An empty query or ``topk < 1``.
            RuntimeError: :meth:`index` was not called.
        """
        if topk < 1:
            raise ValueError(f'topk must be >= 1, got {topk}')
        if self._gallery is None:
            raise RuntimeError('no images indexed yet: call index(image_dir) first')
        text, _ = self.encode_text(query)
        sim = self.model.similarity(text, self._gallery)[0]
        top = sim.topk(min(int(topk), sim.numel()))
        return [
            (self.paths[i], float(s))
            for s, i in zip(top.values.tolist(), top.indices.tolist())
        ]

    __call__ = search

    def explain(self, query: str, image_path: str) -> dict:
        """How each part query links ``query`` to an image.

        Args:
            query (str): The text query.
            image_path (str): An image file.

        Returns:
            dict: ``caption``, ``image_path``, ``score`` (fused similarity),
            ``attn`` (K, h, w) numpy attention of each part query over the
            image's patch grid, ``words`` (the caption's tokens, special and
            padding tokens left out) and ``word_weights`` (K, len(words)) the
            same part queries' attention over those tokens.

        Raises:
            ValueError: An empty query, an unreadable image, or a model
                without part queries or without a patch grid.
        """
        text, inputs = self.encode_text(query)
        try:
            image = self.encode_images([image_path])
        except Exception as err:  # noqa: BLE001 - re-raised naming the image
            raise ValueError(
                f'cannot explain: image "{image_path}" cannot be read '
                f'({type(err).__name__}: {err})'
            ) from err
        if 'attn' not in image or 'attn' not in text:
            raise ValueError(
                f'the ONNX graphs in "{self.encoder.onnx_dir}" have no attention '
                'maps to explain with: export them with '
                'tools/deployment/pytorch2onnx.py --attention'
            )
        num_parts = image['part_embeds'].shape[1]
        if num_parts == 0:
            raise ValueError(
                'the model has no part queries (K = 0): nothing to explain'
            )
        hw = image.get('attn_hw')
        if hw is None:
            raise ValueError(
                'the image attention does not form a patch grid (image_tokens is '
                'not "patch"), so it cannot be drawn over the image'
            )
        score = float(self.model.similarity(text, image)[0, 0])
        text_attn = text['attn'][0].float().cpu().numpy()  # (K, L)
        ids = inputs['text_ids'][0].cpu().numpy()
        mask = inputs['text_mask'][0].cpu().numpy().astype(bool)
        keep = mask.copy()
        words: List[str] = []
        if self._tokenize is not None:
            tokenizer = self._tokenize.tokenizer
            special = set(tokenizer.all_special_ids)
            keep &= ~np.isin(ids, list(special))
            tokens = tokenizer.convert_ids_to_tokens(ids[keep].tolist())
            words = [t.replace('</w>', '') for t in tokens]
        else:
            words = [str(i) for i in ids[keep].tolist()]
        return dict(
            caption=query,
            image_path=image_path,
            score=score,
            attn=image['attn'][0].float().cpu().numpy().reshape(num_parts, *hw),
            words=words,
            word_weights=text_attn[:, keep],
        )

    @staticmethod
    def draw_explanation(explanation: dict, **kwargs):
        """Draw :meth:`explain`'s result (see ``draw_part_explanation``).

        Returns:
            PIL.Image.Image: The figure.
        """
        return draw_part_explanation(
            explanation['caption'],
            explanation['image_path'],
            explanation['attn'],
            explanation['words'],
            explanation['word_weights'],
            header=f'{osp.basename(explanation["image_path"])}  '
            f'score {explanation["score"]:.3f}',
            **kwargs,
        )
