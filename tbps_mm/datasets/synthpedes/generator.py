"""Generate a SynthPedes dataset folder in the CUHK-PEDES layout.

:func:`generate_synthpedes` renders every identity's images (in parallel worker
processes), writes their captions, part masks, attribute table, tokenizer and
meta file, and moves the finished folder into place in one rename, so a crash
never leaves a half dataset that looks complete. The output depends on the
seed and the size arguments only: each identity's randomness comes from
``(seed, id)`` and each image's from ``(seed, id, image index)``, so the files
are byte-identical whatever the number of workers.

Folder layout (``OUT_DIR``)::

    imgs/{split}/{id}/{id}_{k}.jpg      person crops (JPEG, quality 95, 4:4:4)
    masks/{split}/{id}/{id}_{k}.png     part masks, 8-bit grey, pixel = part index
    reid_raw.json                       CUHK-PEDES annotations
    attributes.json                     identities, value frequencies, per-image info
                                        (and, with ``families=M``, the families table)
    tokenizer/                          the grammar's word-level tokenizer
    synthpedes_meta.json                written last: what was generated

Written by hand (the orchestration of the renderer and caption writer); uses
multiprocessing, tqdm, numpy and Pillow.

Example:
    >>> import tempfile, os.path as osp
    >>> root = generate_synthpedes(osp.join(tempfile.mkdtemp(), 'sp'), 'tiny',
    ...                            seed=0, progress=False)
    >>> read_synthpedes_meta(root)['num_ids']
    24
"""

import json
import multiprocessing as mp
import os
import os.path as osp
import shutil
from collections import Counter
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image
from tqdm import tqdm

from .attributes import (
    ATTRIBUTE_PARTS,
    ATTRIBUTE_VALUES,
    BODY_PARTS,
    PART_NAMES,
    attribute_frequencies,
    family_member,
    part_attributes,
    sample_identity,
)
from .captions import processed_tokens, write_captions
from .renderer import render_person
from .tokenizer import build_synthpedes_tokenizer

__all__ = [
    'GENERATOR_VERSION',
    'SIZES',
    'META_FILE',
    'generate_synthpedes',
    'make_families',
    'read_synthpedes_meta',
    'split_id_counts',
    'dump_json',
    'existing_output',
]

#: Bumped whenever the output for a given seed and size changes.
GENERATOR_VERSION = '1.0'

#: Preset sizes: number of identities, images per identity and identities per
#: split (train / val / test, disjoint, in that id order).
SIZES: Dict[str, Dict] = {
    'tiny': dict(num_ids=24, images_per_id=4, splits=dict(train=12, val=4, test=8)),
    'small': dict(
        num_ids=1300, images_per_id=4, splits=dict(train=1000, val=100, test=200)
    ),
    'large': dict(
        num_ids=12000, images_per_id=4, splits=dict(train=10000, val=1000, test=1000)
    ),
}

META_FILE = 'synthpedes_meta.json'
ANN_FILE = 'reid_raw.json'
ATTRIBUTES_FILE = 'attributes.json'
IMAGE_DIR = 'imgs'
MASK_DIR = 'masks'
TOKENIZER_DIR = 'tokenizer'
JPEG_QUALITY = 95
SPLITS = ('train', 'val', 'test')

# Meta entries that must agree for an existing folder to count as "the same
# dataset" (workers and progress do not change the output).
_IDENTITY_KEYS = (
    'generator_version',
    'size',
    'seed',
    'num_ids',
    'images_per_id',
    'image_size',
    'families',
)
_MIN_IMAGE_SIZE = (48, 16)
# Separate random streams for identities and images.
_IDENTITY_STREAM, _IMAGE_STREAM, _FAMILY_STREAM = 0, 1, 2


def split_id_counts(num_ids: int, size: str = 'small') -> Dict[str, int]:
    """Identities per split for ``num_ids`` identities in ``size``'s proportions.

    Args:
        num_ids (int): Total number of identities (at least 3).
        size (str): The preset whose split proportions to follow.

    Returns:
        dict[str, int]: ``{'train': n, 'val': n, 'test': n}``, each at least 1,
        summing to ``num_ids`` (largest-remainder rounding).

    Example:
        >>> split_id_counts(13, 'small')
        {'train': 10, 'val': 1, 'test': 2}
    """
    preset = SIZES[size]['splits']
    if num_ids == sum(preset.values()):
        return dict(preset)
    total = sum(preset.values())
    exact = {s: num_ids * preset[s] / total for s in SPLITS}
    counts = {s: max(1, int(exact[s])) for s in SPLITS}
    order = sorted(SPLITS, key=lambda s: exact[s] - int(exact[s]), reverse=True)
    i = 0
    while sum(counts.values()) < num_ids:
        counts[order[i % len(order)]] += 1
        i += 1
    while sum(counts.values()) > num_ids:  # the minimum of 1 overshot
        largest = max(SPLITS, key=lambda s: counts[s])
        counts[largest] -= 1
    return counts


def read_synthpedes_meta(out_dir: str, meta_file: str = META_FILE) -> Optional[Dict]:
    """Read the meta file of a complete SynthPedes folder.

    Args:
        out_dir (str): The dataset folder.
        meta_file (str): The meta file's name (the video set has its own).
            Defaults to :data:`META_FILE`.

    Returns:
        dict | None: The meta (``size``, ``seed``, ``num_ids``,
        ``images_per_id``, ``image_size``, ``generator_version``, ``splits``
        counts, ...), or None when the folder or its meta file is absent, i.e.
        the folder holds no complete SynthPedes.

    Raises:
        ValueError: The meta file exists but is not a JSON object.

    Example:
        >>> read_synthpedes_meta('no/such/folder') is None
        True
    """
    path = osp.join(out_dir, meta_file)
    if not osp.isfile(path):
        return None
    try:
        with open(path, encoding='utf-8') as f:
            meta = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f'{path}: unreadable SynthPedes meta file ({e})') from e
    if not isinstance(meta, dict):
        raise ValueError(
            f'{path}: SynthPedes meta must be a JSON object, got {type(meta).__name__}'
        )
    return meta


def dump_json(obj, path: str, indent: Optional[int] = None) -> None:
    """Write deterministic JSON: sorted keys, fixed separators, trailing newline.

    Args:
        obj: A JSON-serialisable object.
        path (str): The file.
        indent (int, optional): ``json.dump``'s indent.
    """
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(obj, f, indent=indent, sort_keys=True, ensure_ascii=True)
        f.write('\n')


def _file_stem(pid: int, k: int, id_width: int, k_width: int) -> str:
    return f'{pid:0{id_width}d}/{pid:0{id_width}d}_{k:0{k_width}d}'


def make_families(
    seed: int, splits: Dict[int, str], family_size: int
) -> Tuple[Dict[int, Dict], List[Dict]]:
    """The identities of a families SynthPedes and its families table.

    Consecutive ids of a split form a family of ``family_size`` people. Each
    family has a base identity (drawn like a standard identity, from the
    stream ``(seed, family stream, family)``) that is not itself in the
    dataset, and a random order of the body parts; member m equals the base
    except for the m-th body part of that order, redrawn by
    :func:`~.attributes.family_member` (which keeps the prior's marginals and
    always changes the part). Two members thus share all but two body parts.

    Args:
        seed (int): The dataset seed.
        splits (dict[int, str]): Split of every id; each split's ids are a
            contiguous block whose size is a multiple of ``family_size``.
        family_size (int): People per family, 2 to the number of body parts.

    Returns:
        tuple[dict[int, dict], list[dict]]: The identity of every id (with
        ``family`` and ``changed_part`` added) and the families table: per
        family its ``family`` index, ``split``, member ``ids``,
        ``changed_parts`` (parallel to ``ids``) and ``base`` identity.
    """
    ids = sorted(splits)
    identities: Dict[int, Dict] = {}
    table: List[Dict] = []
    for family, start in enumerate(range(0, len(ids), family_size)):
        members = ids[start : start + family_size]
        rng = np.random.default_rng([seed, _FAMILY_STREAM, family])
        base = sample_identity(rng)
        order = [BODY_PARTS[i] for i in rng.permutation(len(BODY_PARTS))]
        parts = order[: len(members)]
        for m, (pid, part) in enumerate(zip(members, parts)):
            member_rng = np.random.default_rng([seed, _FAMILY_STREAM, family, m + 1])
            identity = family_member(base, part, member_rng)
            identity.update(family=family, changed_part=part)
            identities[pid] = identity
        table.append(
            dict(
                family=family,
                split=splits[members[0]],
                ids=members,
                changed_parts=parts,
                base=base,
            )
        )
    return identities, table


def _render_identity(task: Tuple) -> Tuple[int, Dict, List[Dict], Dict]:
    """Worker: render, caption and save every image of one identity."""
    (root, seed, pid, split, images_per_id, image_size, id_width, k_width) = task[:8]
    identity = task[8] if len(task) > 8 else None
    if identity is None:
        identity = sample_identity(np.random.default_rng([seed, _IDENTITY_STREAM, pid]))
    records, infos = [], {}
    folder = None
    for k in range(images_per_id):
        render_seq, caption_seq = np.random.SeedSequence(
            [seed, _IMAGE_STREAM, pid, k]
        ).spawn(2)
        image, mask, info = render_person(
            identity, np.random.default_rng(render_seq), image_size
        )
        captions, mentions = write_captions(
            identity, info, np.random.default_rng(caption_seq)
        )
        stem = f'{split}/{_file_stem(pid, k, id_width, k_width)}'
        if folder is None:
            folder = osp.dirname(stem)
            os.makedirs(osp.join(root, IMAGE_DIR, folder), exist_ok=True)
            os.makedirs(osp.join(root, MASK_DIR, folder), exist_ok=True)
        image.save(
            osp.join(root, IMAGE_DIR, stem + '.jpg'),
            format='JPEG',
            quality=JPEG_QUALITY,
            subsampling=0,
        )
        Image.fromarray(mask, mode='L').save(
            osp.join(root, MASK_DIR, stem + '.png'), format='PNG'
        )
        file_path = stem + '.jpg'
        records.append(
            dict(
                split=split,
                captions=captions,
                file_path=file_path,
                processed_tokens=[processed_tokens(c) for c in captions],
                id=pid,
            )
        )
        info['mentions'] = mentions
        infos[file_path] = info
    return pid, identity, records, infos


def _check_args(size, seed, num_ids, images_per_id, image_size, workers, families=None):
    if size not in SIZES:
        raise ValueError(
            f'unknown SynthPedes size {size!r}; choose one of {sorted(SIZES)}'
        )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f'seed must be an integer, got {seed!r}')
    if seed < 0:
        raise ValueError(f'seed must be >= 0, got {seed}')
    for name, value, low in (
        ('num_ids', num_ids, len(SPLITS)),
        ('images_per_id', images_per_id, 1),
        ('workers', workers, 1),
    ):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f'{name} must be an integer, got {value!r}')
        if value < low:
            raise ValueError(f'{name} must be >= {low}, got {value}')
    if families is not None:
        if isinstance(families, bool) or not isinstance(families, (int, np.integer)):
            raise ValueError(f'families must be an integer, got {families!r}')
        if not 2 <= families <= len(BODY_PARTS):
            raise ValueError(
                f'families must be between 2 and {len(BODY_PARTS)} (one changed '
                f'body part per member: {", ".join(BODY_PARTS)}), got {families}'
            )
    if (
        not isinstance(image_size, (tuple, list))
        or len(image_size) != 2
        or not all(isinstance(v, (int, np.integer)) for v in image_size)
    ):
        raise ValueError(
            f'image_size must be (height, width) integers, got {image_size!r}'
        )
    if image_size[0] < _MIN_IMAGE_SIZE[0] or image_size[1] < _MIN_IMAGE_SIZE[1]:
        raise ValueError(
            f'image_size must be at least {_MIN_IMAGE_SIZE} '
            f'(height, width), got {tuple(image_size)}'
        )


def existing_output(
    out_dir: str,
    wanted: Dict,
    keys: Sequence[str] = _IDENTITY_KEYS,
    meta_file: str = META_FILE,
    what: str = 'SynthPedes',
) -> bool:
    """Whether ``out_dir`` already holds the generated output ``wanted``.

    Args:
        out_dir (str): The target folder.
        wanted (dict): The meta entries of the output asked for.
        keys (Sequence[str]): The entries that must agree.
        meta_file (str): The meta file's name.
        what (str): The output's name, for messages.

    Returns:
        bool: True if it holds this output; False if it is absent or empty.

    Raises:
        ValueError: It holds anything else (nothing in it is touched).
    """
    if not osp.exists(out_dir):
        return False
    if not osp.isdir(out_dir):
        raise ValueError(
            f'{out_dir} exists and is not a folder; refusing to write {what} there'
        )
    if not os.listdir(out_dir):
        return False
    meta = read_synthpedes_meta(out_dir, meta_file)
    if meta is None:
        raise ValueError(
            f'{out_dir} is not empty and holds no complete {what} '
            f'({meta_file} is missing); refusing to write into it. Choose a '
            'new or empty folder.'
        )
    differ = [
        f'{key}: {meta.get(key)!r} there, {wanted.get(key)!r} asked'
        for key in keys
        if meta.get(key) != wanted.get(key)
    ]
    if differ:
        raise ValueError(
            f'{out_dir} holds a different {what} ('
            + '; '.join(differ)
            + '); refusing to overwrite it. '
            'Choose another folder or delete it.'
        )
    return True


def _attribute_table(
    identities: Dict[int, Dict],
    splits: Dict[int, str],
    infos: Dict[str, Dict],
    families: Optional[List[Dict]] = None,
) -> Dict:
    """The content of attributes.json."""
    counts = {}
    for name in ATTRIBUTE_PARTS:
        counter = Counter(
            ident[name] for ident in identities.values() if ident[name] is not None
        )
        counts[name] = {v: counter.get(v, 0) for v in ATTRIBUTE_VALUES[name]}
    people = []
    for pid in sorted(identities):
        entry = dict(identities[pid])
        entry.update(id=pid, split=splits[pid])
        people.append(entry)
    table = dict(
        generator_version=GENERATOR_VERSION,
        mask_parts=list(PART_NAMES),
        attribute_parts=dict(ATTRIBUTE_PARTS),
        body_parts={part: list(part_attributes(part)) for part in BODY_PARTS},
        values={k: list(v) for k, v in ATTRIBUTE_VALUES.items()},
        frequencies=attribute_frequencies(),
        counts=counts,
        identities=people,
        images=infos,
    )
    if families is not None:
        table['families'] = families
    return table


def _default_workers(num_images: int) -> int:
    if num_images < 400:  # process start-up outweighs the gain
        return 1
    return max(1, min(os.cpu_count() or 1, 8))


def generate_synthpedes(
    out_dir: str,
    size: str = 'small',
    seed: int = 0,
    num_ids: Optional[int] = None,
    images_per_id: Optional[int] = None,
    workers: Optional[int] = None,
    image_size: Sequence[int] = (128, 48),
    progress: bool = True,
    families: Optional[int] = None,
) -> str:
    """Generate a SynthPedes dataset into ``out_dir``.

    Args:
        out_dir (str): Target folder. It must not exist, be empty, or already
            hold the same SynthPedes (then it is returned unchanged).
        size (str): ``'tiny'``, ``'small'`` or ``'large'`` (see :data:`SIZES`).
        seed (int): Non-negative seed; the output is a function of the seed and
            the size arguments only.
        num_ids (int, optional): Override the preset's number of identities
            (split in the preset's proportions). Defaults to the preset's.
        images_per_id (int, optional): Override the preset's images per
            identity.
        workers (int, optional): Worker processes. Defaults to the number of
            CPUs (at most 8), or 1 for fewer than 400 images.
        image_size (tuple[int, int]): Crop (height, width). Defaults to
            (128, 48).
        progress (bool): Show a tqdm progress bar. Defaults to True.
        families (int, optional): Generate the families variant with this
            many people per family (2 to 5): each family is a base identity
            (not in the dataset) and members that each differ from it in
            exactly one body part (:func:`make_families`), with the same
            attribute marginals and split sizes as the standard dataset.
            Every split's size must be a multiple of it, so no family
            straddles two splits. Defaults to None (independent identities).

    Returns:
        str: ``out_dir``.

    Raises:
        ValueError: Bad arguments, or ``out_dir`` holds anything but this very
            dataset (nothing in it is touched).

    Example:
        >>> import tempfile, os.path as osp
        >>> root = osp.join(tempfile.mkdtemp(), 'synthpedes_tiny')
        >>> _ = generate_synthpedes(root, 'tiny', seed=1, progress=False)
        >>> sorted(read_synthpedes_meta(root)['splits'])
        ['test', 'train', 'val']
    """
    _check_args(size, seed, num_ids, images_per_id, image_size, workers, families)
    preset = SIZES[size]
    num_ids = int(num_ids if num_ids is not None else preset['num_ids'])
    images_per_id = int(
        images_per_id if images_per_id is not None else preset['images_per_id']
    )
    image_size = (int(image_size[0]), int(image_size[1]))
    seed = int(seed)
    meta = dict(
        generator_version=GENERATOR_VERSION,
        size=size,
        seed=seed,
        num_ids=num_ids,
        images_per_id=images_per_id,
        image_size=list(image_size),
    )
    if families is not None:
        families = int(families)
        meta['families'] = families
    out_dir = osp.abspath(out_dir)
    if existing_output(out_dir, meta):
        return out_dir

    id_counts = split_id_counts(num_ids, size)
    splits: Dict[int, str] = {}
    pid = 1
    for split in SPLITS:  # ids start at 1; splits are contiguous id blocks
        for _ in range(id_counts[split]):
            splits[pid] = split
            pid += 1
    family_table = None
    preset_identities: Dict[int, Dict] = {}
    if families is not None:
        if num_ids % families:
            raise ValueError(
                f'families={families} needs num_ids to be a multiple of it, '
                f'got {num_ids}'
            )
        # Split whole families, in the preset's proportions: with a preset
        # whose split sizes are multiples of the family size the splits are
        # the standard ones.
        family_counts = split_id_counts(num_ids // families, size)
        id_counts = {s: n * families for s, n in family_counts.items()}
        splits = {}
        pid = 1
        for split in SPLITS:
            for _ in range(id_counts[split]):
                splits[pid] = split
                pid += 1
        preset_identities, family_table = make_families(seed, splits, families)
    id_width = max(4, len(str(num_ids)))
    k_width = max(2, len(str(images_per_id - 1)))

    parent = osp.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp_dir = osp.join(parent, f'.{osp.basename(out_dir)}.partial-{os.getpid()}')
    if osp.exists(tmp_dir):  # left by a killed run of this very process id
        shutil.rmtree(tmp_dir)
    os.makedirs(tmp_dir)
    try:
        tasks = [
            (
                tmp_dir,
                seed,
                p,
                splits[p],
                images_per_id,
                image_size,
                id_width,
                k_width,
                preset_identities.get(p),
            )
            for p in sorted(splits)
        ]
        num_images = num_ids * images_per_id
        if workers is None:
            workers = _default_workers(num_images)
        results = _run(tasks, workers, num_images, images_per_id, progress)

        annotations: List[Dict] = []
        identities: Dict[int, Dict] = {}
        infos: Dict[str, Dict] = {}
        for pid, identity, records, image_infos in results:
            identities[pid] = identity
            annotations.extend(records)
            infos.update(image_infos)
        dump_json(annotations, osp.join(tmp_dir, ANN_FILE))
        dump_json(
            _attribute_table(identities, splits, infos, family_table),
            osp.join(tmp_dir, ATTRIBUTES_FILE),
        )
        build_synthpedes_tokenizer(osp.join(tmp_dir, TOKENIZER_DIR))

        split_counts = {}
        for split in SPLITS:
            n_img = id_counts[split] * images_per_id
            split_counts[split] = dict(
                ids=id_counts[split], images=n_img, captions=2 * n_img
            )
            if families is not None:
                split_counts[split]['families'] = id_counts[split] // families
        meta.update(
            splits=split_counts,
            num_images=num_images,
            captions_per_image=2,
            jpeg_quality=JPEG_QUALITY,
            mask_parts=list(PART_NAMES),
            files=dict(
                annotations=ANN_FILE,
                images=IMAGE_DIR,
                masks=MASK_DIR,
                attributes=ATTRIBUTES_FILE,
                tokenizer=TOKENIZER_DIR,
            ),
        )
        dump_json(meta, osp.join(tmp_dir, META_FILE), indent=2)  # last
        try:
            if osp.isdir(out_dir):  # empty, checked above
                os.rmdir(out_dir)
            os.rename(tmp_dir, out_dir)
        except OSError:
            # another process finished the same dataset first: keep theirs
            if not existing_output(out_dir, meta):
                raise
            shutil.rmtree(tmp_dir, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    return out_dir


def _run(
    tasks: List[Tuple],
    workers: int,
    num_images: int,
    images_per_id: int,
    progress: bool,
) -> List[Tuple]:
    """Render all identities, in order, in ``workers`` processes."""
    bar = tqdm(total=num_images, desc='SynthPedes', unit='img', disable=not progress)
    results = []
    try:
        if workers == 1:
            for task in tasks:
                results.append(_render_identity(task))
                bar.update(images_per_id)
        else:
            method = 'fork' if 'fork' in mp.get_all_start_methods() else 'spawn'
            chunk = max(1, min(16, len(tasks) // (workers * 8)))
            with mp.get_context(method).Pool(workers) as pool:
                for result in pool.imap(_render_identity, tasks, chunk):
                    results.append(result)
                    bar.update(images_per_id)
    finally:
        bar.close()
    return results
