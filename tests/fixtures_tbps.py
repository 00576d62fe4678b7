"""Test fixtures for TBPS data: tiny datasets in each published format and a
tiny BERT-style tokenizer, written into a test's ``tmp_path``.

Example:
    >>> fx = make_tbps_fixture(tmp_path, 'cuhk')
    >>> ds = CUHKPEDES(data_root=fx['data_root'], split='test')
    >>> tok_dir = make_tiny_tokenizer(tmp_path / 'tokenizer')
"""

import json
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from PIL import Image

__all__ = [
    'FORMATS',
    'DEFAULT_SPEC',
    'CAPTION_WORDS',
    'make_tbps_fixture',
    'make_tiny_tokenizer',
    'caption_for',
]

#: Per format: dataset type, annotation file, image key, captions per image,
#: splits, and how an image path looks under ``imgs/``.
FORMATS: Dict[str, dict] = {
    'cuhk': dict(
        type='CUHKPEDES',
        ann_file='reid_raw.json',
        img_key='file_path',
        captions_per_image=2,
        splits=('train', 'val', 'test'),
        processed_tokens=True,
        path='CUHK01/{pid:04d}{k:03d}.jpg',
    ),
    'icfg': dict(
        type='ICFGPEDES',
        ann_file='ICFG-PEDES.json',
        img_key='file_path',
        captions_per_image=1,
        splits=('train', 'test'),
        processed_tokens=True,
        path='{split}/{pid:04d}/{pid:04d}_{k:03d}.jpg',
    ),
    'rstp': dict(
        type='RSTPReid',
        ann_file='data_captions.json',
        img_key='img_path',
        captions_per_image=2,
        splits=('train', 'val', 'test'),
        processed_tokens=False,
        path='{pid:04d}_c{k}_{pid:04d}.jpg',
    ),
}

#: Per split: (original person id, number of images), in file order. Train ids
#: are unsorted and non-contiguous so that re-indexing is exercised.
DEFAULT_SPEC: Dict[str, List[Tuple[int, int]]] = {
    'train': [(5, 2), (1, 3), (3, 1)],
    'val': [(9, 2), (7, 2)],
    'test': [(12, 2), (10, 2), (11, 1)],
}

COLOURS = ('red', 'blue', 'green', 'black', 'white', 'yellow', 'grey', 'pink')
GARMENTS = ('shirt', 'coat', 'dress', 'jacket')
CAPTION_WORDS = (
    *'a man woman in with and wearing pants shoes .'.split(),
    *COLOURS,
    *GARMENTS,
)


def caption_for(pid: int, k: int, c: int) -> str:
    """The ``c``-th caption of image ``k`` of person ``pid`` (vocab words)."""
    who = 'man' if pid % 2 else 'woman'
    top = COLOURS[pid % len(COLOURS)]
    garment = GARMENTS[(pid + c) % len(GARMENTS)]
    bottom = COLOURS[(pid + k + 3) % len(COLOURS)]
    if c % 2 == 0:
        return f'A {who} in a {top} {garment} and {bottom} pants .'
    return f'a {who} wearing  {bottom} pants with {top} shoes .'


def _colour(pid: int, k: int) -> Tuple[int, int, int]:
    return ((pid * 53) % 256, (pid * 97 + k * 31) % 256, (k * 71 + 40) % 256)


def make_tbps_fixture(
    root: Path,
    fmt: str,
    spec: Optional[Dict[str, List[Tuple[int, int]]]] = None,
    image_size: Tuple[int, int] = (24, 12),
    name: Optional[str] = None,
) -> dict:
    """Write a tiny dataset in a published TBPS format.

    Args:
        root (Path): Where to create the dataset folder.
        fmt (str): ``'cuhk'``, ``'icfg'`` or ``'rstp'`` (keys of ``FORMATS``).
        spec (dict, optional): Per split, ``(person id, num images)`` pairs.
            Splits the format lacks are ignored. Defaults to ``DEFAULT_SPEC``.
        image_size (tuple[int, int]): ``(H, W)`` of the solid-colour JPEGs.
        name (str, optional): Folder name. Defaults to ``fmt``.

    Returns:
        dict: ``data_root``, ``ann_file`` (full path), ``type`` (dataset
        class name), ``records`` (the annotation list as written) and
        ``format`` (the ``FORMATS`` entry).
    """
    info = FORMATS[fmt]
    spec = DEFAULT_SPEC if spec is None else spec
    data_root = Path(root) / (name or fmt)
    records = []
    for split in info['splits']:
        for pid, n_images in spec.get(split, []):
            for k in range(n_images):
                rel = info['path'].format(split=split, pid=pid, k=k)
                img_file = data_root / 'imgs' / rel
                img_file.parent.mkdir(parents=True, exist_ok=True)
                h, w = image_size
                Image.new('RGB', (w, h), _colour(pid, k)).save(img_file, 'JPEG')
                captions = [
                    caption_for(pid, k, c) for c in range(info['captions_per_image'])
                ]
                entry = {'id': pid, info['img_key']: rel, 'captions': captions}
                entry['split'] = split
                if info['processed_tokens']:
                    entry['processed_tokens'] = [c.lower().split() for c in captions]
                records.append(entry)
    ann_file = data_root / info['ann_file']
    ann_file.write_text(json.dumps(records), encoding='utf-8')
    return dict(
        data_root=str(data_root),
        ann_file=str(ann_file),
        type=info['type'],
        records=records,
        format=info,
    )


def make_tiny_tokenizer(
    folder: Path, words=CAPTION_WORDS, lowercase: bool = True
) -> str:
    """Save a tiny WordLevel tokenizer with BERT special tokens.

    Built with the ``tokenizers`` library and wrapped in transformers'
    ``PreTrainedTokenizerFast``; ``AutoTokenizer.from_pretrained(folder)``
    loads it. Captions come out as ``[CLS] words... [SEP]``.

    Args:
        folder (Path): The folder to save into (created).
        words (Sequence[str]): The vocabulary besides the special tokens.
        lowercase (bool): Give it a lower-casing normaliser (like uncased
            BERT); False makes it case-sensitive.

    Returns:
        str: The folder.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]']
    vocab = {tok: i for i, tok in enumerate(specials + sorted(set(words)))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token='[UNK]'))
    if lowercase:
        tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single='[CLS] $A [SEP]',
        special_tokens=[('[CLS]', vocab['[CLS]']), ('[SEP]', vocab['[SEP]'])],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token='[PAD]',
        unk_token='[UNK]',
        cls_token='[CLS]',
        sep_token='[SEP]',
        mask_token='[MASK]',
    )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(folder))
    return str(folder)
