"""Commonality sanity: does L_CMR's commonality estimate track true sharing?

``CommonalityMarginRankingLoss`` shrinks the margin of part k between two
people by its commonality estimate ``c^k(i, j)`` (its public
``part_commonality``; ``'pair'``: the clamped mean of the intra-image and
intra-text similarities of part k). On SynthPedes the truth is known: every
identity's attributes (``attributes.json``) and, for every attribute, the body
part it describes. This benchmark

1. encodes the test split with a trained model; each gallery image with its
   first caption is one sample, as in a training pair;
2. computes ``c^k(i, j)`` for every pair of samples of *different* identities
   with the loss module built from the config (``model.losses.cmr``, or its
   defaults when the config has none);
3. maps each part query k to the body part where its image attention is
   densest (the best-matching part, as ``part_localisation.py`` reports it);
4. reports, per query, the Spearman rank correlation between ``c^k(i, j)``
   and the true sharing of that body part between the two identities: the
   share of the part's attributes (e.g. upper: type, colour, sleeves,
   pattern) on which they agree. The same correlation with the other parts'
   sharing shows whether the estimate is specific to the query's part.

It also reports the margins the loss asks for in training-sized batches
(``CommonalityMarginRankingLoss.part_margins``), over all negatives and over
the ones it keeps.

Written by hand (nothing in the stack does this); Spearman from scipy
(``pip install -e ".[analysis]"``). The model, the data loader and the mask
arithmetic come from ``_harness``.

Example:
    python tools/analysis_tools/commonality_sanity.py configs/tbps_synth.py \\
        work_dirs/tbps_synth/epoch_9.pth
"""

import argparse
import sys
from typing import Dict, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from _harness import (
    BODY_PARTS,
    checkpoint_parser,
    encode_checkpoint,
    load_attributes,
    localisation_table,
    patch_part_shares,
    write_result,
)
from scipy.stats import spearmanr

from tbps_mm.evaluation import markdown_table
from tbps_mm.registry import MODELS


def part_sharing(
    attributes: Dict, person_ids: Sequence[int], parts: Sequence[str] = BODY_PARTS
) -> np.ndarray:
    """True sharing of every body part between every two samples.

    Args:
        attributes (dict): ``attributes.json``.
        person_ids (Sequence[int]): The samples' person ids.
        parts (Sequence[str]): Body parts, in the output order.

    Returns:
        np.ndarray: (P, B, B) share of each part's attributes on which the two
        samples' identities agree (an absent hat or bag agrees with another
        absent one).
    """
    by_id = {int(person['id']): person for person in attributes['identities']}
    missing = sorted({int(i) for i in person_ids} - set(by_id))
    if missing:
        raise KeyError(f'attributes.json has no identity {missing[:5]}')
    out = []
    for part in parts:
        names = sorted(a for a, p in attributes['attribute_parts'].items() if p == part)
        if not names:
            raise KeyError(f'attributes.json describes no attribute of part {part!r}')
        agree = np.zeros((len(person_ids), len(person_ids)), dtype=np.float32)
        for name in names:
            values = [str(by_id[int(i)][name]) for i in person_ids]
            _, codes = np.unique(values, return_inverse=True)
            agree += codes[:, None] == codes[None, :]
        out.append(agree / len(names))
    return np.stack(out)


def build_cmr_loss(cfg):
    """The config's CommonalityMarginRankingLoss (its defaults if it has none).

    Args:
        cfg (Config): The training config.

    Returns:
        CommonalityMarginRankingLoss: Built by the registry.
    """
    loss_cfg = (cfg.model.get('losses') or {}).get('cmr')
    if loss_cfg is None:
        loss_cfg = dict(type='CommonalityMarginRankingLoss')
    return MODELS.build(loss_cfg)


def effective_margins(
    loss,
    f: torch.Tensor,
    g: torch.Tensor,
    labels: torch.Tensor,
    batch: int,
    batches: int = 50,
    seed: int = 0,
) -> Dict[str, float]:
    """The margins the loss asks for, in random training-sized batches.

    Args:
        loss (CommonalityMarginRankingLoss): The config's loss.
        f (Tensor): (K, B, D) L2-normalised image parts of the samples.
        g (Tensor): (K, B, D) L2-normalised text parts of the same samples.
        labels (Tensor): (B,) person ids.
        batch (int): Samples per drawn batch (the training batch size).
        batches (int): Batches drawn. Defaults to 50.
        seed (int): Seed of the draws. Defaults to 0.

    Returns:
        dict[str, float]: ``all``: the mean margin over every negative of
        every anchor and part (both directions); ``hardest``: over the
        negatives the loss keeps (its ``negatives`` hardest by hinge; the
        same as ``all`` when it keeps all).
    """
    gen = torch.Generator().manual_seed(seed)
    means = dict(all=[], hardest=[])
    for _ in range(batches):
        pick = torch.randperm(labels.numel(), generator=gen)[:batch]
        fb, gb, lb = f[:, pick], g[:, pick], labels[pick]
        negative = lb[:, None] != lb[None, :]
        size = (f.shape[0], len(pick), len(pick))
        margin = loss.part_margins(fb, gb, lb).expand(size)
        t2i = gb @ fb.transpose(1, 2)
        positive = t2i.diagonal(dim1=1, dim2=2).unsqueeze(-1)
        for scores, m in ((t2i, margin), (t2i.transpose(1, 2), margin.transpose(1, 2))):
            means['all'].append(float(m[:, negative].mean()))
            if loss.negatives == 'all':
                means['hardest'].append(means['all'][-1])
                continue
            hinge = (m - positive + scores).masked_fill(~negative, float('-inf'))
            top = hinge.topk(min(loss.negatives, len(pick)), dim=-1).indices
            means['hardest'].append(float(m.gather(-1, top).mean()))
    return {key: float(np.mean(values)) for key, values in means.items()}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = checkpoint_parser(__doc__.split('\n')[0])
    parser.add_argument(
        '--batch', type=int, default=64, help='batch size of the margin report'
    )
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    cfg, model, encoded = encode_checkpoint(args)
    images, texts = encoded['images'], encoded['texts']

    # One sample per gallery image: the image and its first caption.
    first_caption = {}
    for row, image_id in enumerate(texts['image_id'].tolist()):
        first_caption.setdefault(image_id, row)
    missing = [i for i in images['image_id'].tolist() if i not in first_caption]
    if missing:
        raise ValueError(f'gallery images {missing[:5]} have no caption')
    caption_rows = torch.as_tensor([first_caption[i] for i in images['image_id']])
    f = F.normalize(images['part_embeds'], dim=-1).transpose(0, 1)  # (K, B, D)
    g = F.normalize(texts['part_embeds'][caption_rows], dim=-1).transpose(0, 1)
    person_ids = images['person_id']
    labels = torch.as_tensor(person_ids)
    loss = build_cmr_loss(cfg)
    common = loss.part_commonality(f, g, labels)  # (K, B, B) or (K, B, 1)
    common = common.expand(-1, -1, len(person_ids)).numpy()

    attributes = load_attributes(encoded['data_root'])
    sharing = part_sharing(attributes, person_ids)  # (P, B, B)
    # Pairs of different identities, each unordered pair once.
    upper = np.triu(np.ones((len(person_ids),) * 2, dtype=bool), k=1)
    pairs = upper & (person_ids[:, None] != person_ids[None, :])
    if loss.commonality == 'sample':
        # c^k(i) belongs to the anchor: use every ordered pair.
        pairs = person_ids[:, None] != person_ids[None, :]

    shares = patch_part_shares(
        encoded['data_root'], images['img_path'], images['attn_hw']
    )
    best = localisation_table(images['attn'].numpy(), shares)['best']

    # Commonality at or above this gives the floor margin (margin_min).
    floor_at = 1.0 - loss.margin_min / max(loss.margin_max, 1e-12)
    rho = np.zeros((model.num_parts, len(BODY_PARTS)))
    rows = []
    for k in range(model.num_parts):
        c = common[k][pairs]
        for p in range(len(BODY_PARTS)):
            rho[k, p] = spearmanr(c, sharing[p][pairs]).statistic
        own = sharing[best[k]][pairs]
        rows.append(
            [f'q{k}', BODY_PARTS[best[k]], f'{rho[k, best[k]]:+.3f}']
            + [f'{rho[k, p]:+.3f}' for p in range(len(BODY_PARTS))]
            + [
                f'{c[own == 1].mean():.3f}' if (own == 1).any() else '-',
                f'{c[own == 0].mean():.3f}' if (own == 0).any() else '-',
                f'{c.mean():.3f}',
                f'{100 * (c >= floor_at).mean():.1f}',
            ]
        )
    headers = (
        ['query', 'attends to', 'Spearman (own part)']
        + [f'rho vs {p}' for p in BODY_PARTS]
        + [
            'mean c, part fully shared',
            'mean c, nothing shared',
            'mean c, all pairs',
            '% pairs at margin floor',
        ]
    )
    table = markdown_table(headers, rows)
    print(
        f'\nCommonality sanity, SynthPedes {args.split} split: '
        f'{int(pairs.sum())} pairs of different identities '
        f'({len(person_ids)} images, commonality={loss.commonality!r}); '
        f'checkpoint {args.checkpoint}\n'
    )
    print(table)
    margins = effective_margins(loss, f, g, labels, args.batch)
    kept = 'all' if loss.negatives == 'all' else f'the {loss.negatives} hardest'
    print(
        f'\nMargins asked for in random batches of {args.batch} '
        f'(margin_mode={loss.margin_mode!r}): mean {margins["all"]:.3f} over all '
        f'negatives, {margins["hardest"]:.3f} over {kept} (the ones the loss keeps).'
    )
    write_result(
        args,
        dict(
            commonality=loss.commonality,
            num_pairs=int(pairs.sum()),
            parts=list(BODY_PARTS),
            best=[BODY_PARTS[b] for b in best],
            spearman=rho.tolist(),
            table=table,
            margins=dict(margins, batch=args.batch, negatives=loss.negatives),
        ),
    )
    return 0


if __name__ == '__main__':
    sys.exit(main())
