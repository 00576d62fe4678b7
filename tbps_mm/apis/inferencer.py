"""``TBPSInferencer``: search your own image folders with free text.

It owns the user-facing inference path: build a TBPS model from a config and
a *weights-only* checkpoint (read safely: safetensors or
``torch.load(weights_only=True)``, through the model package's
``load_tbps_weights``, which names every key that does not fit), encode
image folders into a :class:`~tbps_mm.index.GalleryIndex`,
answer text queries with ranked paths and scores, and explain a match part
by part. :meth:`TBPSInferencer.encode_images` and
:meth:`TBPSInferencer.encode_text` are the only places that run the model.

Each image is stored as its fused vector
(:func:`tbps_mm.fused_score.fused_vector` with the model's
``fusion_weight``), and a query is searched with its own fused vector, so the
inner product the index ranks by is the model's test-time score: with the
exact (``'flat'``) index, search ranks as ``TBPSRetrievalMetric`` does.

The index file (by default ``.tbps_mm_gallery.idx`` inside the first folder)
records the model fingerprint (checkpoint bytes and model config), the
pipeline fingerprint (the test pipeline config), the folders and each
image's size and modification time. :meth:`TBPSInferencer.index` brings it
up to date incrementally: new or changed images are encoded and added,
images that are gone (or whose folder left the gallery) are removed, and
nothing else is encoded again. Another model or pipeline, a damaged file, or
another index type than the one asked for rebuilds the index from the
images; a file that is not a tbps_mm index at all is an error (it is never
overwritten). Images that cannot be read are skipped, counted and named in
the log and in the index (and retried only when they change).

Image and caption pre-processing is the config's ``test_dataloader`` pipeline
(built through ``tbps_mm.registry.TRANSFORMS``), batched with MMEngine's
``pseudo_collate`` and the model's own data preprocessor, so inference sees
exactly what evaluation sees. Encoding runs on the model, or, with
``backend='onnxruntime'``, on the graphs that
``tools/deployment/pytorch2onnx.py`` exported from the same checkpoint.

Example:
    >>> inferencer = TBPSInferencer('configs/tbps_synth.py',
    ...                             'tbps_synth.safetensors')
    >>> inferencer.index(['cam1/', 'cam2/'])
    >>> inferencer('a woman in a red coat with a black backpack', topk=5)
    [('/data/cam1/0042.jpg', 1.53), ...]
"""

import hashlib
import json
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.logging import print_log
from tqdm import tqdm

from tbps_mm.fused_score import fused_vector
from tbps_mm.index import (
    MIN_TRAIN_PER_LIST,
    CorruptIndexError,
    GalleryIndex,
    IndexMismatchError,
    default_nlist,
)
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
#: What can encode images and captions (the ``backend`` argument).
BACKENDS = ('pytorch', 'onnxruntime')
#: Index file name used inside the (first) image folder when none is given.
DEFAULT_INDEX_NAME = '.tbps_mm_gallery.idx'


def _fingerprint(value) -> str:
    return hashlib.sha256(
        json.dumps(value, sort_keys=True, default=str).encode()
    ).hexdigest()


def _as_list(value: Union[None, str, Sequence[str]]) -> List[str]:
    if value is None:
        return []
    return [value] if isinstance(value, (str, os.PathLike)) else list(value)


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
        >>> summary = inferencer.index(['cam1/', 'cam2/'],
        ...                            index_file='gallery.idx')
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
        self.fusion_weight = float(getattr(self.model, 'fusion_weight', 0.0))
        model_cfg = config.model
        if hasattr(model_cfg, 'to_dict'):
            model_cfg = model_cfg.to_dict()
        #: What an index must have been built with to be reused.
        self.fingerprints = dict(
            model=_fingerprint(
                dict(checkpoint=self.checkpoint_sha256, model=model_cfg)
            ),
            pipeline=_fingerprint(pipeline_cfg),
        )
        #: The searchable gallery (set by :meth:`index` or :meth:`set_gallery`).
        self.gallery: Optional[GalleryIndex] = None

    @property
    def paths(self) -> List[str]:
        """The searchable images (keys of the gallery), in the order added."""
        return self.gallery.keys if self.gallery is not None else []

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
    def encode_images(
        self, paths: Sequence[str], skipped: Optional[list] = None
    ) -> Optional[Dict[str, torch.Tensor]]:
        """Encode images.

        Args:
            paths (Sequence[str]): Image files.
            skipped (list, optional): When given, images that cannot be read
                are left out and ``(path, reason)`` appended here; the rows
                returned follow the readable paths in order. When None, an
                unreadable image raises.

        Returns:
            dict | None: ``embed`` (B, D), ``part_embeds`` (B, K, D),
            ``attn`` (B, K, N) and ``attn_hw``, as
            ``TBPSRetriever.encode_image``; None when ``skipped`` is given
            and no image was readable.
        """
        items = []
        for i, path in enumerate(paths):
            item = dict(img_path=path, modality='image', sample_idx=i)
            if skipped is None:
                items.append(self._prepare(item))
                continue
            try:
                items.append(self._prepare(item))
            except Exception as err:  # noqa: BLE001 - user files: skip, count, name
                skipped.append((path, f'{type(err).__name__}: {err}'))
        if not items:
            return None
        return self.encoder.encode_image(self._forward(items)['images'])

    def fused(self, out: Dict[str, torch.Tensor]) -> np.ndarray:
        """The fused vectors of :meth:`encode_images` / :meth:`encode_text`
        output, as the gallery index stores and searches them.

        Args:
            out (dict): ``embed`` (B, D) and ``part_embeds`` (B, K, D).

        Returns:
            np.ndarray: (B, D * (1 + K)) float32 (``(B, D)`` when K = 0 or
            ``fusion_weight`` = 0).
        """
        vectors = fused_vector(out['embed'], out['part_embeds'], self.fusion_weight)
        return vectors.float().cpu().numpy()

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
    # Gallery index
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

    def _listing(self, folders: List[str]) -> Dict[str, List[int]]:
        """Absolute image path -> [size, mtime_ns] over ``folders``."""
        listing: Dict[str, List[int]] = {}
        for folder in folders:
            files = self.list_images(folder)
            if not files:
                raise ValueError(
                    f'image folder "{folder}" holds no images (looked recursively '
                    f'for {", ".join(IMAGE_EXTENSIONS)})'
                )
            for rel in files:
                path = osp.join(folder, rel)
                stat = os.stat(path)
                listing[path] = [stat.st_size, stat.st_mtime_ns]
        return listing

    def _open_index(
        self,
        index_file: str,
        options: dict,
        rebuild: bool,
    ) -> Tuple[Optional[GalleryIndex], List[str]]:
        """The index at ``index_file`` if it can be updated (else None, after
        logging why), and the folders it records.

        Raises:
            NotAnIndexError: ``index_file`` exists and is not a tbps_mm
                gallery index: it is never overwritten.
        """
        if not osp.exists(index_file):
            return None, []

        def recorded_folders() -> List[str]:
            try:
                header = GalleryIndex.read_header(index_file)
            except CorruptIndexError:
                return []
            return list(header['metadata'].get('folders') or [])

        if rebuild:
            folders = recorded_folders()  # raises NotAnIndexError first
            print_log(f'Rebuilding the index "{index_file}"', logger='current')
            return None, folders
        try:
            index = GalleryIndex.load(index_file, expected_metadata=self.fingerprints)
        except IndexMismatchError as err:
            print_log(f'{err}: rebuilding it', logger='current')
            return None, recorded_folders()
        except CorruptIndexError as err:
            print_log(f'{err}: rebuilding it', logger='current', level=30)
            return None, recorded_folders()
        folders = list(index.metadata.get('folders') or [])
        why = ''
        asked = options['index_type']
        if asked != 'auto' and index.index_type != asked:
            why = f'it is {index.index_type}, {asked} was asked for'
        for name in ('nlist', 'rank'):
            held, wanted = getattr(index, name), options[name]
            if wanted is not None and held is not None and held != wanted:
                why = f'it has {name} {held}, {wanted} was asked for'
        if why:
            print_log(f'Rebuilding the index "{index_file}": {why}', logger='current')
            return None, folders
        return index, folders

    def index(
        self,
        image_dirs: Union[None, str, Sequence[str]] = None,
        index_file: Optional[str] = None,
        add: Union[None, str, Sequence[str]] = None,
        batch_size: Optional[int] = None,
        rebuild: bool = False,
        index_type: str = 'auto',
        nlist: Optional[int] = None,
        nprobe: Optional[int] = None,
        rank: Optional[int] = None,
        refine_factor: Optional[int] = None,
    ) -> dict:
        """Make the gallery index of image folders searchable, encoding only
        what is not indexed yet.

        The gallery is ``image_dirs`` when only they are given; with ``add``,
        the folders already in the index file plus ``image_dirs`` plus
        ``add``; with neither, the folders in the index file. Images new to
        the index (or changed since) are encoded and added; images no longer
        in those folders are removed; the result equals a rebuild from
        scratch (exactly for ``'flat'``; see ``GalleryIndex`` for IVF).

        Args:
            image_dirs (str | Sequence[str], optional): The folders (searched
                recursively for :data:`IMAGE_EXTENSIONS`).
            index_file (str, optional): Where the index lives. Defaults to
                ``<first folder>/.tbps_mm_gallery.idx``.
            add (str | Sequence[str], optional): Folders to add to those the
                index already holds.
            batch_size (int, optional): Images per forward pass. Defaults to
                the inferencer's ``batch_size``.
            rebuild (bool): Encode every image again.
            index_type (str): ``'auto'``, ``'flat'``, ``'ivf-sq8'``,
                ``'pca-ivf-sq8'`` or ``'two-stage'`` (see ``GalleryIndex``).
                An existing index of another type is rebuilt; ``'auto'``
                keeps whatever the index is.
            nlist (int, optional): IVF cells (a different value rebuilds).
            nprobe (int, optional): IVF cells visited per query (default:
                measured for recall@10 0.99 when the index is trained).
            rank (int, optional): Projected dimensions of the PCA types (a
                different value rebuilds).
            refine_factor (int, optional): ``'two-stage'`` candidates
                re-scored per result.

        Returns:
            dict: ``num_images`` (searchable), ``added`` and ``removed``
            (this call), ``skipped`` (``(path, reason)`` of every unreadable
            image), ``loaded`` (True when an existing index file was
            reused, possibly updated), ``index_file`` and ``index``
            (``GalleryIndex.describe()``).

        Raises:
            FileNotFoundError: A folder does not exist, or no folder is given
                and ``index_file`` does not exist.
            ValueError: A folder holds no image, none is readable, or
                ``index_file`` is not a tbps_mm gallery index (it is left
                untouched).
        """
        image_dirs, add = _as_list(image_dirs), _as_list(add)
        for folder in image_dirs + add:
            if not osp.isdir(folder):
                raise FileNotFoundError(f'image folder "{folder}" does not exist')
        if index_file is None:
            if not (image_dirs or add):
                raise ValueError('give the image folders to index or an index file')
            index_file = osp.join((image_dirs or add)[0], DEFAULT_INDEX_NAME)
        index_file = osp.abspath(index_file)
        if not (image_dirs or add or osp.isfile(index_file)):
            raise FileNotFoundError(
                f'index file "{index_file}" does not exist: give the image folders'
            )

        options = dict(index_type=index_type, nlist=nlist, rank=rank)
        index, recorded = self._open_index(index_file, options, rebuild)
        folders = [osp.abspath(f) for f in image_dirs]
        if add or not image_dirs:
            folders = recorded + folders
        folders = list(dict.fromkeys(folders + [osp.abspath(f) for f in add]))
        if not folders:
            raise ValueError(
                f'index file "{index_file}" records no image folder to rebuild it '
                'from: give the image folders'
            )
        missing = [f for f in folders if not osp.isdir(f)]
        if missing:
            raise FileNotFoundError(
                f'image folder "{missing[0]}" (recorded in "{index_file}") does not '
                'exist'
            )
        listing = self._listing(folders)

        stored = index.metadata if index is not None else {}
        files = dict(stored.get('files', {}))
        skipped = {
            path: entry
            for path, entry in stored.get('skipped', {}).items()
            if listing.get(path) == entry[:2]
        }
        removed = 0
        if index is not None:
            gone = [k for k in index.keys if listing.get(k) != files.get(k)]
            removed = index.remove(gone)
            for key in gone:
                files.pop(key, None)
            if nprobe is not None:
                index.nprobe = nprobe
            if refine_factor is not None:
                index.refine_factor = refine_factor
        todo = [p for p in listing if p not in files and p not in skipped]
        index, new_files, new_skipped = self._encode_into(
            index,
            todo,
            batch_size,
            dict(
                options,
                nprobe=nprobe,
                refine_factor=refine_factor or 10,
                expected_size=len(listing),
            ),
        )
        files.update((p, listing[p]) for p in new_files)
        skipped.update((p, [*listing[p], why]) for p, why in new_skipped)
        if index is None or not len(index):
            first, entry = next(iter(skipped.items()))
            names = ', '.join(f'"{f}"' for f in folders)
            raise ValueError(
                f'none of the {len(listing)} images in {names} could be read; '
                f'first error: {first}: {entry[2]}'
            )
        metadata = dict(
            self.fingerprints, folders=folders, files=files, skipped=skipped
        )
        if new_files or new_skipped or removed or stored != metadata:
            self._save(index, index_file, metadata)
        index.metadata = metadata
        if skipped:
            print_log(
                f'{len(skipped)} of {len(listing)} images could not be read and '
                f'are not searchable: {", ".join(skipped)}',
                logger='current',
                level=30,
            )
        self.gallery = index
        return dict(
            num_images=len(index),
            added=len(new_files),
            removed=removed,
            skipped=[(path, entry[2]) for path, entry in skipped.items()],
            loaded=bool(stored),
            index_file=index_file,
            index=index.describe(),
        )

    def _encode_into(
        self,
        index: Optional[GalleryIndex],
        paths: List[str],
        batch_size: Optional[int],
        options: dict,
    ) -> Tuple[Optional[GalleryIndex], List[str], List[Tuple[str, str]]]:
        """Encode ``paths`` and add them to ``index`` (a new one, built with
        ``GalleryIndex(dim, **options)``, if None).

        A new IVF index is trained on the first images encoded (enough for
        its cells) before any is added.
        """
        batch_size = batch_size or self.batch_size
        added: List[str] = []
        skipped: List[Tuple[str, str]] = []
        pending_keys: List[str] = []
        pending: List[np.ndarray] = []
        progress = tqdm(
            total=len(paths),
            desc='Indexing images',
            unit='img',
            disable=not self.show_progress or not paths,
        )
        for start in range(0, len(paths), batch_size):
            batch = paths[start : start + batch_size]
            progress.update(len(batch))
            failed: List[Tuple[str, str]] = []
            out = self.encode_images(batch, skipped=failed)
            skipped.extend(failed)
            if out is None:
                continue
            bad = {p for p, _ in failed}
            pending_keys.extend(p for p in batch if p not in bad)
            pending.append(self.fused(out))
            if index is None:
                index = GalleryIndex(pending[0].shape[1], **options)
            if not index.is_trained:
                nlist = options['nlist'] or default_nlist(options['expected_size'])
                needed = MIN_TRAIN_PER_LIST * nlist
                if len(pending_keys) < min(needed, len(paths)) and (
                    start + batch_size < len(paths)
                ):
                    continue
            index.add(pending_keys, np.concatenate(pending))
            added.extend(pending_keys)
            pending_keys, pending = [], []
        progress.close()
        return index, added, skipped

    @staticmethod
    def _save(index: GalleryIndex, index_file: str, metadata: dict) -> None:
        """Write the index (atomically); an unwritable folder only warns."""
        try:
            os.makedirs(osp.dirname(index_file), exist_ok=True)
            index.save(index_file, metadata)
        except PermissionError as err:
            print_log(
                f'Cannot write the index "{index_file}" ({err}); continuing '
                'without a saved index',
                logger='current',
                level=30,
            )
            return
        print_log(
            f'Wrote the index of {len(index)} images ({index.describe()}) to '
            f'"{index_file}"',
            logger='current',
        )

    def set_gallery(
        self, paths: Sequence[str], embed: torch.Tensor, part_embeds: torch.Tensor
    ) -> None:
        """Search these pre-computed image embeddings (an in-memory exact
        index; useful for embeddings computed elsewhere).

        Args:
            paths (Sequence[str]): One path (or any unique name) per image.
            embed (Tensor): (N, D) coarse embeddings.
            part_embeds (Tensor): (N, K, D) part embeddings.

        Raises:
            ValueError: Shapes that do not fit together, or repeated paths.
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
        vectors = self.fused(dict(embed=embed, part_embeds=part_embeds))
        gallery = GalleryIndex(vectors.shape[1], 'flat')
        gallery.add(list(paths), vectors)
        self.gallery = gallery

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
            is the model's fused similarity (exact with a ``'flat'`` index;
            an approximate index may miss some of the true top k and scores
            what it finds from 8-bit codes).

        Raises:
            ValueError: An empty query or ``topk < 1``.
            RuntimeError: No gallery yet (:meth:`index` or :meth:`set_gallery`).
        """
        if topk < 1:
            raise ValueError(f'topk must be >= 1, got {topk}')
        if self.gallery is None or not len(self.gallery):
            raise RuntimeError('no images indexed yet: call index(image_dirs) first')
        text, _ = self.encode_text(query)
        scores, keys = self.gallery.search(self.fused(text), int(topk))
        return [(key, float(score)) for key, score in zip(keys[0], scores[0])]

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
