"""``TBPSInferencer``: search your own image folders with free text.

It puts the search core's pieces together for a user: the model from a
config and a checkpoint (:func:`~tbps_mm.apis.init_model`, which reads the
checkpoint without running code from it and names every key that does not
fit), the encoder that turns images and captions into fused vectors
(:class:`~tbps_mm.apis.FusedEncoder`, on PyTorch or on onnxruntime), the
folder walk (:func:`~tbps_mm.apis.image_folders.list_image_folders`), the
resumable cache of encoded vectors
(:class:`~tbps_mm.apis.encoding_cache.EncodingCache`) and the gallery index
(:class:`~tbps_mm.index.GalleryIndex`); it answers text queries with ranked
paths and scores and explains a match part by part.

Each image is stored as its fused vector (the encoder's ``fused_embed``),
and a query is searched with its own, so the inner product the index ranks
by is the model's test-time score: with the exact (``'flat'``) index, search
ranks as ``TBPSRetrievalMetric`` does.

The index file (by default ``.tbps_mm_gallery.idx`` inside the first folder)
records the model fingerprint (checkpoint bytes and model config), the
pipeline fingerprint (the test pipeline config), the folders and each
image's size and modification time. :meth:`TBPSInferencer.index` brings it
up to date incrementally: new or changed images are encoded and added,
images that are gone (or whose folder left the gallery) are removed, and
nothing else is encoded again. Another model or pipeline, a damaged file, or
another index type than the one asked for rebuilds the index from the
images; a file that is not a tbps_mm index at all is an error (it is never
overwritten).

Indexing loses nothing and stops for nothing: dangling links, folders that
cannot be listed and images that cannot be read are skipped, counted by
kind and named (in the log, the summary and the index); an image skipped
once is tried again on the next run. Vectors are encoded in chunks kept in
``<index file>.encoding/`` until the index is written, so a killed build
resumes without encoding the finished chunks again; the temporary files
and unnamed sidecars a killed write left beside the index are removed by
the next ``GalleryIndex.load`` or ``save`` of it (``tbps_mm.index``).

Example:
    >>> inferencer = TBPSInferencer('configs/tbps_synth.py',
    ...                             'tbps_synth.safetensors')
    >>> inferencer.index(['cam1/', 'cam2/'])
    >>> inferencer('a woman in a red coat with a black backpack', topk=5)
    [('/data/cam1/0042.jpg', 1.53), ...]
"""

import os
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from mmengine.config import Config
from mmengine.logging import print_log
from tqdm import tqdm

from tbps_mm.index import (
    MIN_TRAIN_PER_LIST,
    CorruptIndexError,
    GalleryIndex,
    IndexMismatchError,
    default_nlist,
)
from tbps_mm.visualization import draw_part_explanation

from .encoding_cache import CACHE_SUFFIX, EncodingCache
from .fused_encoder import FusedEncoder
from .image_folders import IMAGE_EXTENSIONS, list_image_folders
from .model import init_model

__all__ = [
    'TBPSInferencer',
    'IMAGE_EXTENSIONS',
    'DEFAULT_INDEX_NAME',
    'format_index_summary',
]

#: Index file name used inside the (first) image folder when none is given.
DEFAULT_INDEX_NAME = '.tbps_mm_gallery.idx'
#: Images encoded between two writes of the encoding cache.
DEFAULT_CHUNK_SIZE = 1024


def _as_list(value: Union[None, str, Sequence[str]]) -> List[str]:
    if value is None:
        return []
    return [value] if isinstance(value, (str, os.PathLike)) else list(value)


def format_index_summary(summary: dict) -> List[str]:
    """The lines a tool prints about :meth:`TBPSInferencer.index`'s result.

    Args:
        summary (dict): What ``index`` returned.

    Returns:
        list[str]: What happened to the index, the counts (indexed and
        skipped by kind) and, when anything was skipped, one line per entry.

    Example:
        >>> print('\\n'.join(format_index_summary(inferencer.index('cam1/'))))
        index built: 5 images, flat, 5 vectors of 128 dims (cam1/.tbps_mm_gallery.idx)
        indexed 5, skipped-unreadable 0, skipped-dangling-link 0, ...
    """
    if not summary['loaded']:
        action = 'built'
    elif summary['added'] or summary['removed']:
        action = f'updated (+{summary["added"]} -{summary["removed"]})'
    else:
        action = 'loaded'
    lines = [
        f'index {action}: {summary["num_images"]} images, {summary["index"]} '
        f'({summary["index_file"]})'
    ]
    if summary.get('resumed'):
        lines.append(
            f'resumed an interrupted build: {summary["resumed"]} image(s) reused '
            f'from the encoding cache, {summary["encoded"]} encoded'
        )
    lines.append(', '.join(f'{k} {v}' for k, v in summary['counts'].items()))
    if summary['skipped']:
        lines.append(f'skipped {len(summary["skipped"])} unreadable entries:')
        lines += [f'  {name}: {reason}' for name, reason in summary['skipped']]
    return lines


class TBPSInferencer:
    """Index a folder of images and search it with text queries.

    Args:
        config (str | Config): A tbps_mm config (file path or object) with a
            ``model`` and a ``test_dataloader`` pipeline. Relative paths in
            a config file resolve against its root
            (:func:`tbps_mm.config_paths.config_root`); a Config object is
            used as it is (``tbps_mm.engine.load_config`` resolves them).
        checkpoint (str): A checkpoint: ``.safetensors`` (published), a
            state dict or a training checkpoint, read by
            :func:`tbps_mm.models.checkpoint.load_checkpoint_file` (see
            :func:`~tbps_mm.apis.init_model`).
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
        trust_checkpoint (bool): Unpickle the checkpoint in full, for a file
            the user trusts (``--trust-checkpoint``). By default it is read
            without running code from it (see
            :func:`tbps_mm.models.checkpoint.load_checkpoint_file`).
            Defaults to False.

    Raises:
        FileNotFoundError: The config or checkpoint file does not exist.
        CheckpointMismatchError: The checkpoint does not fit the config
            (every misfit key named).
        UnsafeCheckpointError: Reading the checkpoint could run code and
            ``trust_checkpoint`` is False.
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
        trust_checkpoint: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f'batch_size must be >= 1, got {batch_size}')
        self.model = init_model(
            config, checkpoint, device=device, trust_checkpoint=trust_checkpoint
        )
        #: What encodes images and captions (see :class:`FusedEncoder`).
        self.encoder = FusedEncoder(
            self.model, backend=backend, onnx_dir=onnx_dir, batch_size=batch_size
        )
        self.cfg = self.model.cfg
        self.checkpoint = checkpoint
        self.batch_size = int(batch_size)
        self.show_progress = show_progress
        #: What an index must have been built with to be reused.
        self.fingerprints = self.encoder.fingerprints
        #: The searchable gallery (set by :meth:`index` or :meth:`set_gallery`).
        self.gallery: Optional[GalleryIndex] = None

    @property
    def paths(self) -> List[str]:
        """The searchable images (keys of the gallery), in the order added."""
        return self.gallery.keys if self.gallery is not None else []

    # ------------------------------------------------------------------ #
    # Gallery index
    # ------------------------------------------------------------------ #
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
        chunk_size: int = DEFAULT_CHUNK_SIZE,
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
            chunk_size (int): Images encoded between two writes of the
                encoding cache (what a kill can lose). Defaults to 1024.

        Returns:
            dict: ``num_images`` (searchable), ``added`` and ``removed``
            (this call), ``skipped`` (``(path, reason)`` of every entry left
            out: unreadable images, dangling links, folders that cannot be
            listed), ``counts`` (``indexed`` and ``skipped-unreadable``,
            ``skipped-dangling-link``, ``skipped-unreadable-folder``),
            ``encoded`` (images encoded by this call) and ``resumed``
            (vectors reused from an interrupted build's cache), ``loaded``
            (True when an existing index file was reused, possibly
            updated), ``index_file`` and ``index``
            (``GalleryIndex.describe()``).

        Raises:
            FileNotFoundError: A folder does not exist, or no folder is given
                and ``index_file`` does not exist.
            ValueError: A folder holds no image, none is readable, or
                ``index_file`` is not a tbps_mm gallery index (it is left
                untouched).
        """
        if chunk_size < 1:
            raise ValueError(f'chunk_size must be >= 1, got {chunk_size}')
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
        listing = list_image_folders(folders)
        images = listing.images

        stored = index.metadata if index is not None else {}
        files = dict(stored.get('files', {}))
        removed = 0
        if index is not None:
            gone = [k for k in index.keys if images.get(k) != files.get(k)]
            removed = index.remove(gone)
            for key in gone:
                files.pop(key, None)
            if nprobe is not None:
                index.nprobe = nprobe
            if refine_factor is not None:
                index.refine_factor = refine_factor
        # Images skipped before are tried again: a permission fixed since
        # leaves the file's size and modification time as they were.
        todo = {p: images[p] for p in images if p not in files}
        cache = EncodingCache(index_file + CACHE_SUFFIX, self.fingerprints)
        if rebuild:
            cache.remove()  # encode everything again, as asked
        resumed = cache.reusable(todo)
        if resumed:
            print_log(
                f'Resuming: {len(resumed)} image(s) encoded by an interrupted '
                f'run are reused from "{cache.folder}"',
                logger='current',
            )
        unreadable = self._encode_to_cache(
            cache,
            {p: stat for p, stat in todo.items() if p not in resumed},
            batch_size,
            chunk_size,
        )
        index, new_files = self._add_from_cache(
            index,
            cache,
            todo,
            dict(
                options,
                nprobe=nprobe,
                refine_factor=refine_factor or 10,
                expected_size=len(images),
            ),
        )
        files.update((p, images[p]) for p in new_files)
        skipped_files = {p: [*images[p], why] for p, why in unreadable}
        skipped = [(p, why) for p, why in unreadable] + [
            (path, f'{kind}: {why}') for path, kind, why in listing.skipped
        ]
        counts = listing.counts()
        counts['skipped-unreadable'] += len(unreadable)
        if index is None or not len(index):
            first = skipped[0] if skipped else ('(nothing listed)', '')
            names = ', '.join(f'"{f}"' for f in folders)
            raise ValueError(
                f'none of the {len(images) + len(listing.skipped)} images in '
                f'{names} could be read; first error: {first[0]}: {first[1]}'
            )
        counts = dict(indexed=len(index), **counts)
        del counts['images']
        metadata = dict(
            self.fingerprints, folders=folders, files=files, skipped=skipped_files
        )
        if not (new_files or removed or stored != metadata) or self._save(
            index, index_file, metadata
        ):
            cache.remove()  # the index file holds the vectors now
        index.metadata = metadata
        if skipped:
            print_log(
                f'{len(skipped)} entries could not be read and are not '
                f'searchable: {", ".join(p for p, _ in skipped)}',
                logger='current',
                level=30,
            )
        self.gallery = index
        return dict(
            num_images=len(index),
            added=len(new_files),
            removed=removed,
            skipped=skipped,
            counts=counts,
            encoded=len(todo) - len(resumed) - len(unreadable),
            resumed=len(resumed),
            loaded=bool(stored),
            index_file=index_file,
            index=index.describe(),
        )

    def _encode_to_cache(
        self,
        cache: EncodingCache,
        todo: Dict[str, List[int]],
        batch_size: Optional[int],
        chunk_size: int,
    ) -> List[Tuple[str, str]]:
        """Encode the images of ``todo`` (path -> ``[size, mtime_ns]`` as
        listed) chunk by chunk into ``cache``.

        Returns:
            list[tuple[str, str]]: ``(path, reason)`` of the images that
            could not be read.
        """
        batch_size = batch_size or self.batch_size
        paths = list(todo)
        unreadable: List[Tuple[str, str]] = []
        progress = tqdm(
            total=len(paths),
            desc='Indexing images',
            unit='img',
            disable=not self.show_progress or not paths,
        )
        for chunk_start in range(0, len(paths), chunk_size):
            chunk = paths[chunk_start : chunk_start + chunk_size]
            keys: List[str] = []
            vectors: List[np.ndarray] = []
            for start in range(0, len(chunk), batch_size):
                batch = chunk[start : start + batch_size]
                out = self.encoder.encode_images(batch, skipped=unreadable)
                progress.update(len(batch))
                if out is not None:
                    keys.extend(out['paths'])
                    vectors.append(out['fused_embed'].float().cpu().numpy())
            if keys:
                cache.add(keys, np.concatenate(vectors), [todo[p] for p in keys])
        progress.close()
        return unreadable

    @staticmethod
    def _add_from_cache(
        index: Optional[GalleryIndex],
        cache: EncodingCache,
        wanted: Dict[str, List[int]],
        options: dict,
    ) -> Tuple[Optional[GalleryIndex], List[str]]:
        """Add the cached vectors of ``wanted`` to ``index`` (a new one, built
        with ``GalleryIndex(dim, **options)``, if None), chunk by chunk.

        A new IVF index is trained on the first vectors (enough for its
        cells) before any is added.
        """
        added: List[str] = []
        pending_keys: List[str] = []
        pending: List[np.ndarray] = []
        chunks = list(cache.chunks(wanted))
        for number, (keys, vectors) in enumerate(chunks):
            pending_keys.extend(keys)
            pending.append(vectors)
            if index is None:
                index = GalleryIndex(vectors.shape[1], **options)
            if not index.is_trained and number + 1 < len(chunks):
                nlist = options['nlist'] or default_nlist(options['expected_size'])
                if len(pending_keys) < MIN_TRAIN_PER_LIST * nlist:
                    continue
            index.add(pending_keys, np.concatenate(pending))
            added.extend(pending_keys)
            pending_keys, pending = [], []
        return index, added

    @staticmethod
    def _save(index: GalleryIndex, index_file: str, metadata: dict) -> bool:
        """Write the index (atomically); an unwritable folder only warns.

        Returns:
            bool: Whether the file was written.
        """
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
            return False
        print_log(
            f'Wrote the index of {len(index)} images ({index.describe()}) to '
            f'"{index_file}"',
            logger='current',
        )
        return True

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
        vectors = self.encoder.fuse(embed, part_embeds).float().cpu().numpy()
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
        text = self.encoder.encode_texts([query])
        vector = text['fused_embed'].float().cpu().numpy()
        scores, keys = self.gallery.search(vector, int(topk))
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
        text = self.encoder.encode_texts([query])
        try:
            image = self.encoder.encode_images([image_path])
        except Exception as err:  # noqa: BLE001 - re-raised naming the image
            raise ValueError(
                f'cannot explain: image "{image_path}" cannot be read '
                f'({type(err).__name__}: {err})'
            ) from err
        if 'attn' not in image or 'attn' not in text:
            raise ValueError(
                f'the ONNX graphs in "{self.encoder.backend.onnx_dir}" have no '
                'attention maps to explain with: export them with '
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
        score = float(text['fused_embed'][0] @ image['fused_embed'][0])
        text_attn = text['attn'][0].float().cpu().numpy()  # (K, L)
        ids = text['text_ids'][0].cpu().numpy()
        keep = text['text_mask'][0].cpu().numpy().astype(bool)
        tokenizer = self.encoder.tokenizer
        if tokenizer is not None:
            keep &= ~np.isin(ids, list(set(tokenizer.all_special_ids)))
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
