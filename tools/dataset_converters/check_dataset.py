"""Check a TBPS dataset and report every bad entry at once.

Reads the annotation file of a CUHK-PEDES / ICFG-PEDES / RSTPReid /
SynthPedes dataset (given by its type, or by a config whose data loaders use
it) and lists every malformed entry (not an object, missing field, bad id,
unknown split, no captions), every empty caption and every image that is
missing, empty or cannot be decoded. Exits with status 1 if anything is
wrong, 0 otherwise. The checks are ``BaseTBPSDataset.find_problems``, the
same the loader applies one at a time.

Examples::

    python tools/dataset_converters/check_dataset.py CUHKPEDES \\
        --data-root data/cuhk_pedes
    python tools/dataset_converters/check_dataset.py RSTPReid \\
        --data-root data/rstpreid --split test --no-decode
    python tools/dataset_converters/check_dataset.py \\
        configs/_base_/datasets/icfg_pedes.py --data-root data/icfg_pedes
"""

import argparse
import sys
from typing import List, Optional

from mmengine.config import Config

import tbps_mm  # noqa: F401  (registers the dataset classes)
from tbps_mm.datasets import BaseTBPSDataset
from tbps_mm.registry import DATASETS

# Keys of a dataset config that do not matter for checking the annotation.
_IGNORED_KEYS = ('type', 'split', 'pipeline', 'lazy_init', 'test_mode')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Report every bad entry of a TBPS dataset (exit 1 if any).'
    )
    parser.add_argument(
        'dataset',
        help='a dataset type (CUHKPEDES, ICFGPEDES, RSTPReid, SynthPedes) or a '
        'config file whose train/val/test data loaders use TBPS datasets',
    )
    parser.add_argument(
        '--data-root',
        help='the dataset folder (required with a type; overrides the '
        "config's data_root)",
    )
    parser.add_argument(
        '--split',
        nargs='+',
        help='check only these splits (default: all; malformed entries are '
        'reported in every split)',
    )
    parser.add_argument('--ann-file', help='annotation file (default: per type)')
    parser.add_argument('--img-prefix', help="image folder (default: 'imgs')")
    parser.add_argument(
        '--no-decode',
        action='store_true',
        help='only check that images exist and are not empty (faster)',
    )
    parser.add_argument(
        '--max-report',
        type=int,
        default=0,
        help='print at most this many problems (0: all); the count is exact',
    )
    return parser.parse_args(argv)


def _dataset_cfgs_from_config(path: str) -> List[dict]:
    """The TBPS dataset configs of a config's data loaders (unwrapping
    ``dataset`` / ``datasets`` wrappers)."""
    cfg = Config.fromfile(path)
    found: List[dict] = []

    def visit(ds_cfg):
        if not isinstance(ds_cfg, dict):
            return
        if 'dataset' in ds_cfg:
            visit(ds_cfg['dataset'])
        for inner in ds_cfg.get('datasets', []) or []:
            visit(inner)
        ds_type = ds_cfg.get('type')
        cls = DATASETS.get(ds_type) if isinstance(ds_type, str) else ds_type
        if isinstance(cls, type) and issubclass(cls, BaseTBPSDataset):
            found.append(dict(ds_cfg))

    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        loader = cfg.get(key)
        if loader:
            visit(loader.get('dataset'))
    if not found:
        raise SystemExit(f'{path}: no TBPS dataset in its data loaders.')
    return found


def build_unloaded_dataset(ds_cfg: dict) -> BaseTBPSDataset:
    """Build a dataset without reading (or generating) anything."""
    ds_type = ds_cfg['type']
    cls = DATASETS.get(ds_type) if isinstance(ds_type, str) else ds_type
    if cls is None or not (isinstance(cls, type) and issubclass(cls, BaseTBPSDataset)):
        raise SystemExit(f'Unknown TBPS dataset type {ds_type!r}.')
    kwargs = {k: v for k, v in ds_cfg.items() if k not in _IGNORED_KEYS}
    return cls(split=cls.SPLITS[0], lazy_init=True, **kwargs)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    overrides = {}
    if args.data_root:
        overrides['data_root'] = args.data_root
    if args.ann_file:
        overrides['ann_file'] = args.ann_file
    if args.img_prefix:
        overrides['img_prefix'] = args.img_prefix
    if args.dataset.endswith('.py'):
        ds_cfgs = [{**c, **overrides} for c in _dataset_cfgs_from_config(args.dataset)]
    else:
        if not args.data_root:
            raise SystemExit('--data-root is required with a dataset type.')
        ds_cfgs = [dict(type=args.dataset, **overrides)]

    total, seen = 0, set()
    for ds_cfg in ds_cfgs:
        dataset = build_unloaded_dataset(ds_cfg)
        key = (
            type(dataset).__name__,
            dataset.ann_file,
            dataset.data_prefix['img_path'],
        )
        if key in seen:
            continue
        seen.add(key)
        if args.split:
            unknown = [s for s in args.split if s not in dataset.SPLITS]
            if unknown:
                raise SystemExit(
                    f'{key[0]} has the splits {list(dataset.SPLITS)}; '
                    f'unknown: {unknown}.'
                )
        print(f'Checking {key[0]}: {dataset.ann_file} (images under {key[2]})')
        problems = dataset.find_problems(
            splits=args.split, decode_images=not args.no_decode, progress=True
        )
        print()
        shown = problems[: args.max_report] if args.max_report else problems
        for message in shown:
            print(message)
        if len(shown) < len(problems):
            print(f'... and {len(problems) - len(shown)} more')
        print(f'{key[0]}: {len(problems)} problem(s)')
        total += len(problems)
    return 1 if total else 0


if __name__ == '__main__':
    sys.exit(main())
