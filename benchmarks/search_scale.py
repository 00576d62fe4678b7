"""Benchmark: text-to-image search over 100k / 1M / 10M images with FAISS.

Encoding ten million crops on a CPU is out of reach, so the large galleries
are built from the *real* embeddings of a trained model (``CONFIG`` +
``CHECKPOINT``) on a SynthPedes folder (``--data-root``), scaled up with a
generative model fitted to them; the queries are real caption embeddings of
identities the generative model never saw.

1. **Real embeddings.** Every image of the train, val and test splits and
   every test caption goes through the config's test pipeline and the model
   (``encode_image`` / ``encode_text``) into its fused vector
   (``tbps_mm.fused_score.fused_vector``: ``D * (1 + K)`` floats whose inner
   products are the model's test-time score). Cached in ``--cache-dir``.
2. **Scale-up** (:class:`EmbeddingModel`). Fitted on the train and val images
   only (the test identities are held out): identity means, the
   between-identity spread of those means and the within-identity spread of
   the images around them, each as its leading principal directions plus an
   isotropic remainder that keeps the total variance of the rest. A synthetic
   identity re-samples a real identity's mean and perturbs it with
   between-identity noise scaled by ``--bandwidth`` (a smoothed bootstrap:
   a Gaussian kernel density estimate of the identity distribution); each of
   its ``--images-per-id`` images adds within-identity noise. Every block
   (coarse, each part) is then L2-normalised and scaled back as
   ``fused_vector`` does, so each synthetic vector is a valid fused vector.
   Chunk ``c`` of a gallery is drawn from its own generator seeded from
   ``(--seed, c)``: a gallery is the same whatever the chunk order, and no
   step ever holds more than one chunk of float32 besides the index.
3. **Galleries.** ``size`` synthetic vectors followed by the 800 real test
   images (the people the queries describe are in the gallery, as in use).
4. **Index types** (``--index SIZE|KIND|NPROBES``): every kind is a
   ``tbps_mm.index.GalleryIndex`` type, built, trained, filled and searched
   through its public methods (what ``tools/search.py`` uses): ``flat``,
   ``ivf-sq8/NLIST``, ``pca-ivf-sq8/RANK/NLIST`` and
   ``two-stage/RANK/NLIST[/REFINE]``. Each image is added under its gallery
   row number as key (so ids are row numbers). ``NPROBES`` lists
   ``NPROBE[@REFINE]`` points: a number, ``gallery`` (the nprobe the index
   measured on held-out gallery vectors when trained) or ``auto`` (the
   nprobe measured on ``--calibration-queries`` held-out test captions, none
   of them a recall query, with ``GalleryIndex.calibrate``); ``@REFINE``
   sets a two-stage index's re-scoring factor for that point. Each reports
   build time (train + add; wall and CPU seconds, the drawing of the
   vectors not counted), the index's memory (codes + ids + coarse
   centroids) and disk (float16 vectors) per image, the process's peak
   RSS, p50 / p95 latency of single-query ``GalleryIndex.search`` calls
   (vectors and their keys; ``--timed-queries`` after ``--warmup``, at most
   ``--time-budget`` seconds; ``faiss.omp_set_num_threads`` from
   ``--search-threads``), recall@10 against exact search (``|approx top-10 ∩
   exact top-10| / 10`` over ``--recall-queries`` test captions; the exact
   top-10 comes from the float32 vectors while the first index of a size
   is filled, one matrix product per chunk, so a 10M ground truth never
   needs the 51 GB flat index), and R@1 of the test captions in the big
   gallery (top-1 is one of the caption's real images), approximate and
   exact.
5. **SynthPedes test split through each index.** The trained (empty) index of
   each approximate type holds only the 800 test images; every test caption
   is searched with ``k = 800`` and the returned scores go through
   ``tbps_mm.evaluation.functional.rank_metrics`` (R@1, mAP). A test image
   the index does not return (its inverted list was not probed) ranks below
   every returned one and below every unreturned wrong image, so the number
   never flatters. Which lists a query probes depends on the query and the
   centroids only, so this is what the quantisation and probing of the
   at-scale index do to the standard protocol.

Usage:
    python benchmarks/search_scale.py CONFIG CHECKPOINT \\
        [--data-root data/synthpedes_small] \\
        [--index '1000000|two-stage/256/1024|auto,32,64' ...] \\
        [--work-dir DIR] --out benchmarks/results/search_scale.json \\
        --plot docs/images/search_scale.png

    The default ``--index`` list is 100k and 1M; 10M runs on its own (it
    streams the gallery; ``--work-dir`` on a disk with 2 * dim bytes per
    image free for the two-stage vectors). ``--replot A.json B.json --plot
    P.png`` redraws the table and plot of recorded runs.

Example output (shape only; recorded numbers live in docs/benchmarks.md)::

    | gallery | index | nprobe | build s (CPU s) | memory GiB | disk GiB | ...
    |:--|:--|--:|--:|--:|--:|
    | 10,000,000 | `two-stage/256/4096` | 64 (captions), x10 | ... |
"""

import argparse
import gc
import hashlib
import json
import os
import os.path as osp
import sys
import time
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from _common import (
    format_machine,
    machine_info,
    markdown_table,
    percentile,
    quiet_mmengine,
    write_json,
)

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

TOPK = 10
#: nprobe words of ``--index``: the nprobe measured on held-out captions
#: (``auto``, or on gallery vectors without ``--calibration-queries``) or the
#: one the index measured on held-out gallery vectors when trained.
NPROBE_WORDS = ('auto', 'gallery')


# ---------------------------------------------------------------------- #
# 1. Real embeddings
# ---------------------------------------------------------------------- #
def encode_synthpedes(
    config: str,
    checkpoint: str,
    data_root: str,
    batch_size: int = 64,
    trust_checkpoint: bool = False,
) -> Dict[str, np.ndarray]:
    """Fused vectors of every image and every test caption of a SynthPedes folder.

    Args:
        config (str): The model's config file.
        checkpoint (str): Its checkpoint (training or published), read by
            ``tbps_mm.apis.init_model``.
        data_root (str): A SynthPedes folder (``reid_raw.json``, ``imgs/``,
            ``tokenizer/``).
        batch_size (int): Items per forward pass.
        trust_checkpoint (bool): Unpickle the checkpoint in full (a file the
            user trusts).

    Returns:
        dict: ``img`` (N, F) float32 fused image vectors, ``img_pid`` (N,),
        ``img_split`` (N,) ('train' / 'val' / 'test'), ``cap`` (M, F) fused
        vectors of the test captions, ``cap_pid`` (M,), ``fusion_weight``,
        ``embed_dims`` and ``num_parts``.

    Example:
        >>> data = encode_synthpedes('configs/tbps_synth.py', 'epoch_9.pth',
        ...                          'data/synthpedes_small')  # doctest: +SKIP
        >>> data['img'].shape  # doctest: +SKIP
        (5200, 1280)
    """
    from tbps_mm.apis import FusedEncoder, find_test_pipeline, read_config

    ann_file = osp.join(data_root, 'reid_raw.json')
    if not osp.isfile(ann_file):
        raise FileNotFoundError(f'"{ann_file}" does not exist: not a SynthPedes folder')
    cfg = read_config(config)
    pipeline = [
        dict(t, tokenizer=osp.join(data_root, 'tokenizer'))
        if t['type'] == 'TokenizeCaption'
        else t
        for t in find_test_pipeline(cfg)
    ]
    encoder = FusedEncoder.from_config(
        cfg,
        checkpoint,
        trust_checkpoint=trust_checkpoint,
        pipeline=pipeline,
        batch_size=batch_size,
    )
    with open(ann_file) as f:
        entries = json.load(f)
    images = [
        (osp.join(data_root, 'imgs', e['file_path']), int(e['id']), e['split'])
        for e in entries
    ]
    captions = [
        (c, int(e['id']))
        for e in entries
        if e['split'] == 'test'
        for c in e['captions']
    ]
    weight = encoder.fusion_weight
    img = encoder.encode_images([p for p, _, _ in images])['fused_embed']
    cap = encoder.encode_texts([c for c, _ in captions])['fused_embed']
    return dict(
        img=img.float().numpy(),
        img_pid=np.array([pid for _, pid, _ in images]),
        img_split=np.array([split for _, _, split in images]),
        cap=cap.float().numpy(),
        cap_pid=np.array([pid for _, pid in captions]),
        fusion_weight=np.float64(weight),
        embed_dims=np.int64(cfg.model.head.embed_dims),
        num_parts=np.int64(cfg.model.head.num_parts),
    )


def cached_encoding(args: argparse.Namespace) -> Dict[str, np.ndarray]:
    """:func:`encode_synthpedes`, cached in ``--cache-dir`` under a key of the
    checkpoint's bytes, the config and the data folder."""
    from tbps_mm.models.checkpoint import file_sha256

    key = hashlib.sha256(
        json.dumps(
            [file_sha256(args.checkpoint), open(args.config).read(), args.data_root]
        ).encode()
    ).hexdigest()[:16]
    path = osp.join(args.cache_dir, f'search_scale_embeddings_{key}.npz')
    if osp.isfile(path):
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    start = time.perf_counter()
    data = encode_synthpedes(
        args.config,
        args.checkpoint,
        args.data_root,
        trust_checkpoint=args.trust_checkpoint,
    )
    print(
        f'encoded {len(data["img"])} images and {len(data["cap"])} captions '
        f'in {time.perf_counter() - start:.0f} s',
        flush=True,
    )
    os.makedirs(args.cache_dir, exist_ok=True)
    tmp = path + '.tmp.npz'
    np.savez(tmp, **data)
    os.replace(tmp, path)
    return data


# ---------------------------------------------------------------------- #
# 2. Scale-up
# ---------------------------------------------------------------------- #
def _spread(x: np.ndarray, rank: int) -> Tuple[np.ndarray, float, np.ndarray]:
    """Leading principal directions of zero-mean rows ``x`` and the rest.

    Returns:
        tuple: ``basis`` (rank, F) rows scaled by each direction's standard
        deviation, ``iso_std`` (the standard deviation per dimension that
        keeps the variance outside those directions) and ``eigvals`` (all).
    """
    cov = x.T.astype(np.float64) @ x.astype(np.float64) / max(len(x) - 1, 1)
    eigvals, eigvecs = np.linalg.eigh(cov)
    eigvals, eigvecs = eigvals[::-1].clip(min=0), eigvecs[:, ::-1]
    rank = min(rank, len(eigvals))
    basis = (eigvecs[:, :rank] * np.sqrt(eigvals[:rank])).T
    rest = eigvals[rank:].sum() / len(eigvals)
    return basis.astype(np.float32), float(np.sqrt(rest)), eigvals


class EmbeddingModel:
    """Synthetic fused image vectors shaped by a model's real embeddings.

    Args:
        vectors (np.ndarray): (N, F) real fused image vectors.
        pids (np.ndarray): (N,) their identities (each with >= 2 images).
        embed_dims (int): D (block size of ``fused_vector``).
        fusion_weight (float): lambda (scale of the part blocks).
        rank (int): Principal directions kept per spread; the rest of the
            variance is spread evenly over all dimensions.
        bandwidth (float): Scale of the between-identity noise added to a
            re-sampled identity mean.
        images_per_id (int): Images of every synthetic identity.

    Example:
        >>> model = EmbeddingModel(vectors, pids, 256, 1.0)  # doctest: +SKIP
        >>> model.chunk(seed=0, index=0, size=1000).shape  # doctest: +SKIP
        (1000, 1280)
    """

    def __init__(
        self,
        vectors: np.ndarray,
        pids: np.ndarray,
        embed_dims: int,
        fusion_weight: float,
        rank: int = 128,
        bandwidth: float = 0.5,
        images_per_id: int = 4,
    ) -> None:
        ids, inverse = np.unique(pids, return_inverse=True)
        counts = np.bincount(inverse)
        if counts.min() < 2:
            raise ValueError('every identity needs >= 2 images to measure its spread')
        means = np.zeros((len(ids), vectors.shape[1]), np.float64)
        np.add.at(means, inverse, vectors)
        means /= counts[:, None]
        self.means = means.astype(np.float32)
        within = vectors - self.means[inverse]
        # unbiased: each identity's residuals lose one degree of freedom
        within *= np.sqrt(counts / (counts - 1.0))[inverse][:, None]
        self.within, self.within_iso, self.within_eig = _spread(within, rank)
        between = self.means - self.means.mean(0)
        self.between, self.between_iso, self.between_eig = _spread(between, rank)
        self.dims = vectors.shape[1]
        self.embed_dims = embed_dims
        self.fusion_weight = fusion_weight
        self.bandwidth = bandwidth
        self.images_per_id = images_per_id

    def normalise(self, x: np.ndarray) -> np.ndarray:
        """Make every row a valid fused vector: its coarse and part blocks
        through ``tbps_mm.fused_score.fused_vector`` (in place)."""
        from tbps_mm.fused_score import fused_vector

        blocks = torch.from_numpy(x).view(len(x), -1, self.embed_dims)
        x[:] = fused_vector(blocks[:, 0], blocks[:, 1:], self.fusion_weight).numpy()
        return x

    def chunk(self, seed: int, index: int, size: int) -> np.ndarray:
        """Chunk ``index`` of a gallery: ``size`` vectors (a multiple of
        ``images_per_id``), from its own torch generator, seeded from
        (seed, index).

        Returns:
            np.ndarray: (size, F) float32.
        """
        if size % self.images_per_id:
            raise ValueError(f'chunk size {size} is not a multiple of images_per_id')
        gen = torch.Generator().manual_seed(seed * 1_000_003 + index)

        def normal(*shape: int) -> torch.Tensor:
            return torch.randn(*shape, generator=gen)

        n_ids = size // self.images_per_id
        src = torch.randint(len(self.means), (n_ids,), generator=gen)
        centres = torch.from_numpy(self.means)[src]
        noise = normal(n_ids, len(self.between)) @ torch.from_numpy(self.between)
        noise += self.between_iso * normal(n_ids, self.dims)
        centres += self.bandwidth * noise
        x = centres.repeat_interleave(self.images_per_id, dim=0)
        x += normal(size, len(self.within)) @ torch.from_numpy(self.within)
        x += self.within_iso * normal(size, self.dims)
        x = x.numpy()
        return self.normalise(x)


def fidelity(
    gen: EmbeddingModel, data: Dict[str, np.ndarray], seed: int
) -> Dict[str, Dict[str, float]]:
    """How the synthetic vectors compare with the real ones they imitate.

    A synthetic gallery as large as the real train + val images is drawn and
    both are described by the same numbers: the score between two images of
    one identity and of two identities (mean, 99th percentile), the share of
    variance in the 64 leading principal directions, and, for the held-out
    test captions, the exact top-1 and 10th scores and the mean score over
    the gallery (their gap is what an approximate index has to resolve).

    Returns:
        dict: ``real`` and ``synthetic``, each a dict of those numbers.
    """
    shape = data['img_split'] != 'test'
    real, real_pid = data['img'][shape], data['img_pid'][shape]
    n = len(real) - len(real) % gen.images_per_id
    synth = gen.chunk(seed + 11, 0, n)
    synth_pid = np.arange(n) // gen.images_per_id
    cap = data['cap']
    out = {}
    for name, x, pid in (('real', real, real_pid), ('synthetic', synth, synth_pid)):
        sim = x @ x.T
        same = pid[:, None] == pid[None, :]
        np.fill_diagonal(same, False)
        other = pid[:, None] != pid[None, :]
        centred = x - x.mean(0)
        eig = np.linalg.eigvalsh(centred.T.astype(np.float64) @ centred)[::-1]
        q = cap @ x.T
        top = -np.sort(-q, axis=1)[:, :TOPK]
        out[name] = dict(
            same_id_mean=float(sim[same].mean()),
            other_id_mean=float(sim[other].mean()),
            other_id_p99=float(np.percentile(sim[other], 99)),
            variance_top64=float(eig[:64].sum() / eig.sum()),
            query_top1=float(top[:, 0].mean()),
            query_top10=float(top[:, -1].mean()),
            query_mean=float(q.mean()),
        )
    return out


def gallery_chunks(
    model: EmbeddingModel, size: int, seed: int, chunk: int, extra: np.ndarray
) -> Iterator[np.ndarray]:
    """The chunks of a gallery of ``size`` synthetic vectors, then ``extra``."""
    for index, start in enumerate(range(0, size, chunk)):
        yield model.chunk(seed, index, min(chunk, size - start))
    yield extra


# ---------------------------------------------------------------------- #
# 3-5. Indexes and measurements
# ---------------------------------------------------------------------- #
def index_spec(kind: str) -> Tuple[str, Dict]:
    """``TYPE[/RANK]/NLIST[/REFINE]`` -> (GalleryIndex type, its knobs).

    ``flat``; ``ivf-sq8/NLIST``; ``pca-ivf-sq8/RANK/NLIST``;
    ``two-stage/RANK/NLIST[/REFINE]``.
    """
    from tbps_mm.index import INDEX_TYPES

    parts = kind.split('/')
    index_type, numbers = parts[0], parts[1:]
    shapes = {
        'flat': 0,
        'ivf-sq8': 1,
        'pca-ivf-sq8': 2,
        'two-stage': (2, 3),
    }
    if index_type not in INDEX_TYPES or not all(n.isdigit() for n in numbers):
        raise ValueError(
            f'index kind "{kind}": use flat, ivf-sq8/NLIST, pca-ivf-sq8/RANK/NLIST '
            'or two-stage/RANK/NLIST[/REFINE]'
        )
    allowed = shapes[index_type]
    if len(numbers) not in (allowed if isinstance(allowed, tuple) else (allowed,)):
        raise ValueError(f'index kind "{kind}": wrong number of knobs')
    numbers = [int(n) for n in numbers]
    knobs: Dict = {}
    if index_type == 'ivf-sq8':
        knobs['nlist'] = numbers[0]
    elif index_type != 'flat':
        knobs.update(rank=numbers[0], nlist=numbers[1])
        if len(numbers) == 3:
            knobs['refine_factor'] = numbers[2]
    return index_type, knobs


def new_index(kind: str, dims: int, size: int):
    """The ``GalleryIndex`` a kind string names, sized for ``size``."""
    from tbps_mm.index import GalleryIndex

    index_type, knobs = index_spec(kind)
    return GalleryIndex(dims, index_type, expected_size=size, **knobs)


def add_rows(index, vectors: np.ndarray) -> None:
    """Add vectors under keys that are their gallery row numbers (ids are
    given in the same order, so an id is its row number)."""
    start = index._next_id
    index.add([str(i) for i in range(start, start + len(vectors))], vectors)


def time_queries(
    index,
    queries: np.ndarray,
    warmup: int,
    budget_s: float = 0.0,
    min_queries: int = 20,
    k: int = TOPK,
) -> Tuple[List[float], List[float]]:
    """Wall-clock and CPU seconds of single-query searches (after ``warmup``
    untimed ones).

    The CPU time (``time.process_time``, all threads of the process) is what
    a search costs on a machine of its own; on a shared one the wall-clock
    time also holds the waits for a core. With ``budget_s``, stops once the
    timed searches took that long and at least ``min_queries`` were timed.
    """
    for q in queries[:warmup]:
        index.search(q[None], k)
    wall, cpu = [], []
    for q in queries[warmup:]:
        start, start_cpu = time.perf_counter(), time.process_time()
        index.search(q[None], k)  # the product's search: ids and their keys
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
        if budget_s and len(wall) >= min_queries and sum(wall) > budget_s:
            break
    return wall, cpu


def test_split_metrics(
    index,
    img: np.ndarray,
    img_pid: np.ndarray,
    cap: np.ndarray,
    cap_pid: np.ndarray,
) -> Dict[str, float]:
    """R@1 / mAP of the test split through ``index`` (an empty trained index).

    Every caption is searched with ``k`` = the number of test images; images
    the index does not return rank after every returned one and after every
    unreturned wrong one (missing correct: -inf, missing wrong: -1e30).
    """
    from tbps_mm.evaluation.functional import rank_metrics

    add_rows(index, img)
    scores, ids = index.search_ids(cap, len(img))
    correct = cap_pid[:, None] == img_pid[None, :]
    sim = np.where(correct, -np.inf, np.float32(-1e30)).astype(np.float32)
    rows = np.broadcast_to(np.arange(len(cap))[:, None], ids.shape)
    found = ids >= 0
    sim[rows[found], ids[found]] = scores[found]
    out = rank_metrics(torch.from_numpy(sim), cap_pid, img_pid, topk=(1, 5, 10))
    return dict(R1=out['R1'], mAP=out['mAP'], mean_returned=float(found.sum(1).mean()))


def parse_specs(specs: Sequence[str]) -> List[Tuple[int, str, List[Optional[int]]]]:
    """``SIZE|KIND[|NPROBE,NPROBE...]`` -> (size, kind, nprobes)."""
    out = []
    for spec in specs:
        parts = spec.split('|')
        if len(parts) not in (2, 3) or not parts[0].isdigit():
            raise ValueError(
                f'--index "{spec}": expected SIZE|KIND[|NPROBE,...], e.g. '
                '"1000000|two-stage/256/1024|auto,16,32"'
            )
        nprobes: list = [('auto', None)]
        if len(parts) == 3:
            nprobes = [parse_probe(p, spec) for p in parts[2].split(',')]
        out.append((int(parts[0]), parts[1], nprobes))
    return out


def parse_probe(token: str, spec: str) -> Tuple:
    """``NPROBE[@REFINE]`` -> (nprobe or word, refine_factor or None)."""
    nprobe, _, refine = token.partition('@')
    if not (nprobe in NPROBE_WORDS or nprobe.isdigit()) or not (
        refine == '' or refine.isdigit()
    ):
        raise ValueError(
            f'--index "{spec}": "{token}" is not NPROBE[@REFINE] (NPROBE a '
            f'number or one of {NPROBE_WORDS})'
        )
    return (nprobe if nprobe in NPROBE_WORDS else int(nprobe)), (
        int(refine) if refine else None
    )


class TopKStream:
    """Exact top-k of fixed queries, updated chunk by chunk as chunks pass."""

    def __init__(self, queries: np.ndarray, k: int = TOPK) -> None:
        self.queries = queries
        self.scores = np.full((len(queries), k), -np.inf, np.float32)
        self.ids = np.full((len(queries), k), -1, np.int64)
        self.offset = 0

    def update(self, block: np.ndarray) -> None:
        k = self.scores.shape[1]
        scores = self.queries @ block.T
        kk = min(k, block.shape[0])
        part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
        s = np.concatenate([self.scores, np.take_along_axis(scores, part, 1)], 1)
        i = np.concatenate([self.ids, part + self.offset], 1)
        order = np.argsort(-s, axis=1, kind='stable')[:, :k]
        self.scores = np.take_along_axis(s, order, 1)
        self.ids = np.take_along_axis(i, order, 1)
        self.offset += block.shape[0]


def run_size(
    size: int,
    specs: List[Tuple[str, List[Optional[int]]]],
    gen: EmbeddingModel,
    data: Dict[str, np.ndarray],
    args: argparse.Namespace,
    log,
) -> List[Dict]:
    """Every index type of one gallery size, each a ``GalleryIndex``.

    The exact top-10 of the recall queries is computed while the first index
    type's vectors stream past, from the float32 vectors themselves.
    """
    import faiss

    test = data['img_split'] == 'test'
    test_img, test_pid = data['img'][test], data['img_pid'][test]
    cap, cap_pid = data['cap'], data['cap_pid']
    order = np.random.default_rng(args.seed + 1).permutation(len(cap))
    recall_q = order[: args.recall_queries]
    timed_q = order[: args.timed_queries + args.warmup]
    total = size + len(test_img)
    gallery_pid = np.concatenate([np.full(size, -1), test_pid])
    dims = data['img'].shape[1]

    exact_split = test_split_metrics(
        new_index('flat', dims, 1), test_img, test_pid, cap, cap_pid
    )
    truth = None
    records = []
    for kind, nprobes in specs:
        if kind == 'flat' and total * dims * 4 > args.max_flat_bytes:
            records.append(
                dict(
                    gallery=size,
                    index=kind,
                    status='skipped',
                    message=f'{total * dims * 4 / 1e9:.1f} GB of float32 '
                    f'over --max-flat-bytes',
                )
            )
            log(f'[{size}] {kind}: skipped (does not fit)')
            continue
        faiss.omp_set_num_threads(args.threads)
        index = new_index(kind, dims, total)
        rss_before = peak_rss_gib()
        train_s, n, calibrate_s, train_cpu = 0.0, 0, 0.0, 0.0
        tuned: Dict = {}
        if kind != 'flat':
            n = min(
                size,
                args.train_size,
                args.train_per_list * index_spec(kind)[1]['nlist'],
            )
            n -= n % args.images_per_id
            sample = np.concatenate(
                list(gallery_chunks(gen, n, args.seed + 7, args.chunk, test_img[:0]))
            )
            start, start_cpu = time.perf_counter(), time.process_time()
            index.train(sample)
            train_s = time.perf_counter() - start
            train_cpu = time.process_time() - start_cpu
            tuned = dict(gallery=index.nprobe, auto=index.nprobe)
            if args.calibration_queries:
                # Held-out captions, none of them a recall query.
                held = order[len(recall_q) : len(recall_q) + args.calibration_queries]
                start = time.perf_counter()
                tuned['auto'] = index.calibrate(sample, cap[held])
                calibrate_s = time.perf_counter() - start
                log(f'[{size}] {kind}: calibrated on captions in {calibrate_s:.0f} s')
            del sample
            log(
                f'[{size}] {kind}: trained in {train_s:.0f} s, '
                f'calibration {index.calibration}'
            )
        empty = index.empty_like()
        stream = TopKStream(cap[recall_q]) if truth is None else None
        add_s = add_cpu = 0.0
        refine = index.refine_factor
        for block in gallery_chunks(gen, size, args.seed, args.chunk, test_img):
            if stream is not None:
                stream.update(block)
            start, start_cpu = time.perf_counter(), time.process_time()
            add_rows(index, block)
            add_s += time.perf_counter() - start
            add_cpu += time.process_time() - start_cpu
        if stream is not None:
            truth = stream.ids
        memory = index.backend.memory_bytes()
        disk = index.backend.disk_bytes()
        log(
            f'[{size}] {kind}: train {train_s:.0f} s, add {add_s:.0f} s, '
            f'{memory / total:.0f} B/img in memory, {disk / total:.0f} B/img on disk'
        )
        exact_r1 = 100.0 * np.mean(gallery_pid[truth[:, 0]] == cap_pid[recall_q])
        for nprobe, refine_factor in nprobes:
            if kind != 'flat':
                index.nprobe = tuned[nprobe] if nprobe in NPROBE_WORDS else nprobe
            if kind.startswith('two-stage'):
                index.refine_factor = refine_factor or refine
            faiss.omp_set_num_threads(args.search_threads)
            load = os.getloadavg()[0]
            times, cpu = time_queries(
                index, cap[timed_q], args.warmup, args.time_budget, args.min_queries
            )
            faiss.omp_set_num_threads(args.threads)
            _, ids = index.search_ids(cap[recall_q], TOPK)
            recall = np.mean(
                [len(set(a[a >= 0]) & set(b)) / TOPK for a, b in zip(ids, truth)]
            )
            r1_big = 100.0 * np.mean(gallery_pid[ids[:, 0]] == cap_pid[recall_q])
            split_index = empty.empty_like()
            if kind != 'flat':
                split_index.nprobe = index.nprobe
            if kind.startswith('two-stage'):
                split_index.refine_factor = index.refine_factor
            split = test_split_metrics(split_index, test_img, test_pid, cap, cap_pid)
            del split_index
            rec = dict(
                gallery=size,
                index=kind,
                nprobe=index.nprobe,
                refine_factor=index.refine_factor,
                nprobe_source={
                    'auto': 'captions' if args.calibration_queries else 'gallery',
                    'gallery': 'gallery',
                }.get(nprobe, 'given')
                if kind != 'flat'
                else '',
                nprobe_gallery=tuned.get('gallery'),
                nprobe_captions=tuned.get('auto') if args.calibration_queries else None,
                calibration=index.calibration,
                calibrate_captions_s=calibrate_s,
                status='ok',
                train_s=train_s,
                add_s=add_s,
                build_s=train_s + add_s,
                train_cpu_s=train_cpu,
                add_cpu_s=add_cpu,
                build_cpu_s=train_cpu + add_cpu,
                train_vectors=n,
                bytes_per_image=memory / total,
                disk_bytes_per_image=disk / total,
                index_memory_gib=memory / 2**30,
                index_disk_gib=disk / 2**30,
                peak_rss_gib=peak_rss_gib(),
                peak_rss_gib_before=rss_before,
                p50_ms=1000 * percentile(times, 50),
                p95_ms=1000 * percentile(times, 95),
                cpu_p50_ms=1000 * percentile(cpu, 50),
                cpu_p95_ms=1000 * percentile(cpu, 95),
                timed_queries=len(times),
                load_average_1min=load,
                recall_at_10=float(recall),
                recall_queries=len(recall_q),
                r1_in_gallery=float(r1_big),
                r1_in_gallery_exact=float(exact_r1),
                test_split_R1=split['R1'],
                test_split_mAP=split['mAP'],
                test_split_mean_returned=split['mean_returned'],
                test_split_R1_exact=exact_split['R1'],
                test_split_mAP_exact=exact_split['mAP'],
            )
            log(
                f'[{size}] {kind} nprobe={index.nprobe} refine='
                f'{index.refine_factor}: p50 {rec["p50_ms"]:.1f} ms, '
                f'p95 {rec["p95_ms"]:.1f} ms (CPU p50 {rec["cpu_p50_ms"]:.1f}), '
                f'recall@10 {recall:.4f}, R1 in gallery '
                f'{r1_big:.2f} (exact {exact_r1:.2f}), test R1 {split["R1"]:.2f} '
                f'mAP {split["mAP"]:.2f} (load {load:.1f})'
            )
            records.append(rec)
            if args.out:
                write_json(args.out + '.partial', dict(results=records))
        del index, empty
        gc.collect()
    return records


def peak_rss_gib() -> float:
    """The process's peak resident memory so far (GiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    from tbps_mm.models.checkpoint import TRUST_CHECKPOINT_HELP

    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', nargs='?', help='the model config')
    parser.add_argument(
        'checkpoint', nargs='?', help='training checkpoint or published weights'
    )
    parser.add_argument(
        '--trust-checkpoint', action='store_true', help=TRUST_CHECKPOINT_HELP
    )
    parser.add_argument('--data-root', default='data/synthpedes_small')
    parser.add_argument(
        '--index',
        nargs='*',
        default=[
            '100000|flat',
            '100000|ivf-sq8/256|auto,8,16',
            '100000|two-stage/256/256|auto,8,16',
            '1000000|flat',
            '1000000|ivf-sq8/1024|auto,32,64',
            '1000000|pca-ivf-sq8/256/1024|auto,32,64',
            '1000000|two-stage/256/1024|auto,16,32,64',
        ],
        help='SIZE|KIND[|NPROBE,...]; KIND: flat, ivf-sq8/NLIST, '
        'pca-ivf-sq8/RANK/NLIST, two-stage/RANK/NLIST[/REFINE] (GalleryIndex '
        'types); NPROBE "auto" is the nprobe the index measured when trained',
    )
    parser.add_argument('--recall-queries', type=int, default=500)
    parser.add_argument(
        '--calibration-queries',
        type=int,
        default=256,
        help='test captions (none a recall query) that nprobe "auto" is '
        'measured on after training (0: the nprobe the index measured on '
        'held-out gallery vectors)',
    )
    parser.add_argument('--timed-queries', type=int, default=200)
    parser.add_argument('--warmup', type=int, default=10)
    parser.add_argument(
        '--time-budget',
        type=float,
        default=120.0,
        help='seconds of timed searches per point (at least --min-queries); '
        '0: no limit',
    )
    parser.add_argument('--min-queries', type=int, default=20)
    parser.add_argument(
        '--train-size',
        type=int,
        default=200_000,
        help='at most this many synthetic vectors to train on',
    )
    parser.add_argument(
        '--train-per-list',
        type=int,
        default=39,
        help='training vectors per IVF cell (faiss asks >= 39)',
    )
    parser.add_argument('--chunk', type=int, default=100_000)
    parser.add_argument('--rank', type=int, default=128)
    parser.add_argument('--bandwidth', type=float, default=0.5)
    parser.add_argument('--images-per-id', type=int, default=4)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument(
        '--threads',
        type=int,
        default=2,
        help='faiss threads for training, adding, batch search',
    )
    parser.add_argument(
        '--search-threads',
        type=int,
        default=2,
        help='faiss threads for the timed single-query searches',
    )
    parser.add_argument('--max-flat-bytes', type=float, default=12e9)
    parser.add_argument('--cache-dir', default='work_dirs/search_scale')
    parser.add_argument(
        '--work-dir',
        default=None,
        help='folder of the two-stage float16 vector files (2 * dim bytes per '
        'image; default: the temporary folder)',
    )
    parser.add_argument('--out', default=None)
    parser.add_argument('--plot', default=None, help='latency-vs-recall PNG')
    parser.add_argument(
        '--plot-title',
        default='Text-to-image search at scale '
        '(quick-start model embeddings, scaled up)',
    )
    parser.add_argument(
        '--replot',
        nargs='+',
        default=None,
        metavar='JSON',
        help='only print the table and plot of recorded runs (results joined)',
    )
    return parser.parse_args(argv)


def plot(records: List[Dict], path: str, title: str) -> None:
    """Latency (p50, log scale) against recall@10, one line per gallery size
    and index kind through its nprobe values; the targets as shaded boxes."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    colours = {100_000: 'tab:blue', 1_000_000: 'tab:orange', 10_000_000: 'tab:red'}
    markers = ['o', 's', '^', 'D', 'v', 'P', 'X']
    lines: Dict[Tuple[int, str], List[Dict]] = {}
    for r in records:
        if r['status'] == 'ok':
            lines.setdefault((r['gallery'], r['index']), []).append(r)
    kinds = sorted({kind for _, kind in lines})
    for (size, kind), recs in sorted(lines.items()):
        recs = sorted(recs, key=lambda r: r['nprobe'] or 0)
        ax.plot(
            [r['p50_ms'] for r in recs],
            [r['recall_at_10'] for r in recs],
            marker=markers[kinds.index(kind) % len(markers)],
            color=colours.get(size, 'black'),
            label=f'{size:,} {kind}',
        )
        for r in recs:
            if r['nprobe']:
                ax.annotate(
                    str(r['nprobe']),
                    (r['p50_ms'], r['recall_at_10']),
                    textcoords='offset points',
                    xytext=(4, -10),
                    fontsize=7,
                )
    for limit, recall, size in ((150, 0.99, 1_000_000), (50, 0.99, 10_000_000)):
        ax.fill_between(
            [1e-2, limit],
            recall,
            1.002,
            color=colours[size],
            alpha=0.08,
            label=f'target {size:,}',
        )
    ax.set_xscale('log')
    ax.set_xlabel('p50 latency per single-query search (ms, log)')
    ax.set_ylabel('recall@10 against exact search')
    ax.set_ylim(
        min(
            0.8,
            min((r['recall_at_10'] for v in lines.values() for r in v), default=0.8),
        ),
        1.002,
    )
    ax.set_title(title, fontsize=9)
    ax.grid(True, which='both', alpha=0.3)
    ax.legend(fontsize=7, loc='lower right')
    fig.tight_layout()
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    print(f'wrote {path}')


def print_table(records: List[Dict]) -> None:
    """The Markdown table of a run: one row per index type and nprobe."""
    headers = [
        'gallery',
        'index',
        'nprobe',
        'build s (CPU s)',
        'memory GiB',
        'disk GiB',
        'peak RSS GiB',
        'p50 ms (wall)',
        'p95 ms (wall)',
        'p50 ms (CPU)',
        'recall@10',
        'R@1 in gallery (exact)',
        'test R@1 (exact)',
    ]
    rows = []
    for r in records:
        if r['status'] != 'ok':
            rows.append([f'{r["gallery"]:,}', r['index'], '', r['status']] + [''] * 9)
            continue
        nprobe = r['nprobe'] or ''
        if nprobe and r.get('nprobe_source') in ('captions', 'gallery'):
            nprobe = f'{nprobe} ({r["nprobe_source"]})'
        if r.get('refine_factor'):
            nprobe = f'{nprobe}, x{r["refine_factor"]}'
        rows.append(
            [
                f'{r["gallery"]:,}',
                f'`{r["index"]}`',
                nprobe,
                f'{r["build_s"]:.0f} ({r.get("build_cpu_s", float("nan")):.0f})',
                f'{r.get("index_memory_gib", 0):.2f}',
                f'{r.get("index_disk_gib", 0):.2f}',
                f'{r.get("peak_rss_gib", 0):.1f}',
                f'{r["p50_ms"]:.1f}',
                f'{r["p95_ms"]:.1f}',
                f'{r["cpu_p50_ms"]:.1f}' if 'cpu_p50_ms' in r else '',
                f'{r["recall_at_10"]:.4f}',
                f'{r["r1_in_gallery"]:.1f} ({r["r1_in_gallery_exact"]:.1f})',
                f'{r["test_split_R1"]:.2f} '
                f'({r.get("test_split_R1_exact", float("nan")):.2f})',
            ]
        )
    print(markdown_table(headers, rows, align='llr' + 'r' * 10))


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    if args.replot:
        records = []
        for path in args.replot:
            with open(path) as f:
                records += json.load(f)['results']
        print_table(records)
        plot(records, args.plot or 'search_scale.png', args.plot_title)
        return
    if not (args.config and args.checkpoint):
        raise SystemExit('give CONFIG and CHECKPOINT (or --replot JSON ...)')
    torch.set_num_threads(args.threads)
    if args.work_dir:
        import tempfile

        os.makedirs(args.work_dir, exist_ok=True)
        tempfile.tempdir = args.work_dir
    quiet_mmengine()
    info = machine_info()
    import faiss

    info['faiss'] = faiss.__version__

    def log(msg: str) -> None:
        print(time.strftime('%H:%M:%S'), msg, flush=True)

    data = cached_encoding(args)
    shape = data['img_split'] != 'test'
    gen = EmbeddingModel(
        data['img'][shape],
        data['img_pid'][shape],
        int(data['embed_dims']),
        float(data['fusion_weight']),
        rank=args.rank,
        bandwidth=args.bandwidth,
        images_per_id=args.images_per_id,
    )
    log(
        f'model fitted on {shape.sum()} images of '
        f'{len(np.unique(data["img_pid"][shape]))} identities'
    )
    realism = fidelity(gen, data, args.seed)
    for name, stats in realism.items():
        log(f'{name}: ' + ', '.join(f'{k} {v:.3f}' for k, v in stats.items()))
    by_size: Dict[int, list] = {}
    for size, kind, nprobes in parse_specs(args.index):
        by_size.setdefault(size, []).append((kind, nprobes))
    records = []
    for size, specs in by_size.items():
        records += run_size(size, specs, gen, data, args, log)
    print_table(records)
    print('\n' + format_machine(info))
    write_json(
        args.out,
        dict(
            benchmark='search_scale',
            machine=info,
            args=vars(args),
            fidelity=realism,
            results=records,
        ),
    )
    if args.plot:
        plot(records, args.plot, args.plot_title)


if __name__ == '__main__':
    main()
