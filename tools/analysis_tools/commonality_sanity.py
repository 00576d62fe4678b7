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
   sharing shows whether the estimate is specific to the query's part;
5. breaks the own part down attribute by attribute: the estimate against
   agreement on each attribute (which of them it tracks), and agreement on
   each attribute against the part's sharing (how far an estimator that
   tracked that attribute alone, perfectly, would get on step 4).

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
import copy
import sys
from typing import Dict, List, Optional, Sequence, Tuple

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
from scipy.stats import rankdata, spearmanr

from tbps_mm.evaluation import markdown_table
from tbps_mm.models.losses.commonality_margin_ranking_loss import COMMONALITY_MODES
from tbps_mm.registry import MODELS


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho, NaN (without scipy's warning) when either side is constant.

    A constant estimate, say from a collapsed model, ranks nothing: its
    correlation is undefined and must read as such, never as a number.
    """
    x, y = np.asarray(x), np.asarray(y)
    if x.size == 0 or x.min() == x.max() or y.min() == y.max():
        return float('nan')
    return float(spearmanr(x, y).statistic)


def part_attribute_names(attributes: Dict, part: str) -> List[str]:
    """The attributes of ``attributes.json`` that describe one body part.

    Args:
        attributes (dict): ``attributes.json``.
        part (str): A body part (``'head'``, ``'upper'``, ...).

    Returns:
        list[str]: Its attribute names, sorted.
    """
    names = sorted(a for a, p in attributes['attribute_parts'].items() if p == part)
    if not names:
        raise KeyError(f'attributes.json describes no attribute of part {part!r}')
    return names


def attribute_agreement(
    attributes: Dict, person_ids: Sequence[int], names: Sequence[str]
) -> np.ndarray:
    """Whether every two samples' identities agree on each attribute.

    Args:
        attributes (dict): ``attributes.json``.
        person_ids (Sequence[int]): The samples' person ids.
        names (Sequence[str]): Attribute names.

    Returns:
        np.ndarray: (A, B, B) 1.0 where the two identities have the same
        value (an absent hat or bag agrees with another absent one), else 0.
    """
    by_id = {int(person['id']): person for person in attributes['identities']}
    missing = sorted({int(i) for i in person_ids} - set(by_id))
    if missing:
        raise KeyError(f'attributes.json has no identity {missing[:5]}')
    out = np.zeros((len(names), len(person_ids), len(person_ids)), dtype=np.float32)
    for index, name in enumerate(names):
        values = [str(by_id[int(i)][name]) for i in person_ids]
        _, codes = np.unique(values, return_inverse=True)
        out[index] = codes[:, None] == codes[None, :]
    return out


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
    return np.stack(
        [
            attribute_agreement(
                attributes, person_ids, part_attribute_names(attributes, part)
            ).mean(axis=0)
            for part in parts
        ]
    )


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
    parser.add_argument(
        '--modes',
        nargs='+',
        choices=COMMONALITY_MODES,
        help="commonality estimators to compare (default: the config's)",
    )
    return parser.parse_args(argv)


def per_sample_sharing(sharing: np.ndarray, person_ids: np.ndarray) -> np.ndarray:
    """True commonality of each sample's parts in the split.

    Args:
        sharing (np.ndarray): (P, B, B) from :func:`part_sharing`.
        person_ids (np.ndarray): (B,) person ids.

    Returns:
        np.ndarray: (P, B) mean sharing of each part with the samples of
        every other identity: how common the sample's part is.
    """
    other = person_ids[:, None] != person_ids[None, :]
    return (sharing * other).sum(-1) / np.maximum(other.sum(-1), 1)


def commonality_report(
    loss,
    f: torch.Tensor,
    g: torch.Tensor,
    labels: torch.Tensor,
    sharing: np.ndarray,
    best: np.ndarray,
    part_attributes: Optional[Dict[int, Tuple[List[str], np.ndarray]]] = None,
) -> Dict:
    """How one commonality estimator tracks the true sharing of body parts.

    Args:
        loss (CommonalityMarginRankingLoss): Its ``commonality`` is the
            estimator.
        f (Tensor): (K, B, D) L2-normalised image parts.
        g (Tensor): (K, B, D) L2-normalised text parts of the same samples.
        labels (Tensor): (B,) person ids.
        sharing (np.ndarray): (P, B, B) true sharing (:func:`part_sharing`).
        best (np.ndarray): (K,) each query's best-matching body part.
        part_attributes (dict, optional): For the attribute breakdown: body
            part index -> (its attribute names, their (A, B, B) agreement from
            :func:`attribute_agreement`). None: no breakdown.

    Returns:
        dict: ``spearman`` (K, P) rank correlation of the estimate with every
        part's true sharing, over the pairs of different identities
        (unordered for pair estimators, ordered for ``'sample'``);
        ``spearman_own`` (K,) the same against the query's own part;
        ``spearman_sample`` (K,) per sample: the estimate's mean over the
        other identities against the true commonality of the own part
        (:func:`per_sample_sharing`); ``spearman_score`` (K,) against the
        negative's cross-modal part score (the mean of both directions);
        ``rows`` the table rows; ``num_pairs``; ``attributes`` per query, for
        each attribute of its own part: ``agree`` (share of pairs agreeing),
        ``rho_estimate`` (the estimate against agreement on it) and
        ``rho_part`` (agreement on it against the part's sharing: what an
        estimator tracking that attribute alone, perfectly, would score; NaN
        where agreement is constant), with ``attribute_rows`` their table.
    """
    person_ids = labels.numpy()
    B = len(person_ids)
    common = loss.part_commonality(f, g, labels).expand(-1, -1, B).numpy()
    other = person_ids[:, None] != person_ids[None, :]
    pairs = np.triu(np.ones((B, B), dtype=bool), k=1) & other
    if loss.commonality == 'sample':
        # c^k(i) belongs to the anchor: use every ordered pair.
        pairs = other
    cross = g @ f.transpose(1, 2)  # (K, B, B): text i vs image j
    score = (0.5 * (cross + cross.transpose(1, 2))).numpy()
    truth_sample = per_sample_sharing(sharing, person_ids)  # (P, B)
    # Commonality at or above this gives the floor margin (margin_min).
    floor_at = 1.0 - loss.margin_min / max(loss.margin_max, 1e-12)
    K = f.shape[0]
    rho = np.zeros((K, len(BODY_PARTS)))
    rho_sample, rho_score, ceiling, rows = np.zeros(K), np.zeros(K), np.zeros(K), []
    by_attribute, attribute_rows = [], []
    for k in range(K):
        c = common[k][pairs]
        for p in range(len(BODY_PARTS)):
            rho[k, p] = _spearman(c, sharing[p][pairs])
        c_sample = (common[k] * other).sum(-1) / np.maximum(other.sum(-1), 1)
        rho_sample[k] = _spearman(c_sample, truth_sample[best[k]])
        rho_score[k] = _spearman(c, score[k][pairs])
        own = sharing[best[k]][pairs]
        ceiling[k] = spearmanr(own, rankdata(own, method='ordinal')).statistic
        rows.append(
            [
                loss.commonality,
                f'q{k}',
                BODY_PARTS[best[k]],
                f'{rho[k, best[k]]:+.3f}',
                f'{ceiling[k]:+.3f}',
                f'{rho_sample[k]:+.3f}',
                f'{rho_score[k]:+.3f}',
            ]
            + [f'{rho[k, p]:+.3f}' for p in range(len(BODY_PARTS))]
            + [
                f'{c[own == 1].mean():.3f}' if (own == 1).any() else '-',
                f'{c[own == 0].mean():.3f}' if (own == 0).any() else '-',
                f'{c.mean():.3f}',
                f'{100 * (c >= floor_at).mean():.1f}',
            ]
        )
        by_attribute.append({})
        names, agreement = (part_attributes or {}).get(int(best[k]), ([], None))
        for name, agree in zip(names, agreement if agreement is not None else []):
            a = agree[pairs]
            row = dict(
                agree=float(a.mean()),
                rho_estimate=_spearman(c, a),
                rho_part=_spearman(a, own),
            )
            by_attribute[k][name] = row
            attribute_rows.append(
                [loss.commonality, f'q{k}', BODY_PARTS[best[k]], name]
                + [f'{100 * row["agree"]:.1f}']
                + [
                    '-' if np.isnan(row[key]) else f'{row[key]:+.3f}'
                    for key in ('rho_estimate', 'rho_part')
                ]
            )
    return dict(
        spearman=rho,
        spearman_own=rho[np.arange(K), best],
        spearman_sample=rho_sample,
        spearman_score=rho_score,
        ceiling=ceiling,
        rows=rows,
        num_pairs=int(pairs.sum()),
        attributes=by_attribute,
        attribute_rows=attribute_rows,
    )


HEADERS = (
    [
        'estimator',
        'query',
        'attends to',
        'Spearman (own part)',
        'ceiling (own part)',
        'per sample (own part)',
        "rho vs negative's score",
    ]
    + [f'rho vs {p}' for p in BODY_PARTS]
    + [
        'mean c, part fully shared',
        'mean c, nothing shared',
        'mean c, all pairs',
        '% pairs at margin floor',
    ]
)

ATTRIBUTE_HEADERS = [
    'estimator',
    'query',
    'attends to',
    'attribute',
    '% pairs agreeing',
    'rho, estimate vs agreement',
    'rho, agreement vs part sharing',
]


def _nan_to_none(value: float) -> Optional[float]:
    return None if np.isnan(value) else float(value)


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
    attributes = load_attributes(encoded['data_root'])
    sharing = part_sharing(attributes, person_ids)  # (P, B, B)
    shares = patch_part_shares(
        encoded['data_root'], images['img_path'], images['attn_hw']
    )
    best = localisation_table(images['attn'].numpy(), shares)['best']
    part_attributes = {}
    for part in sorted(set(best.tolist())):
        names = part_attribute_names(attributes, BODY_PARTS[part])
        part_attributes[part] = (
            names,
            attribute_agreement(attributes, person_ids, names),
        )

    modes = args.modes or [loss.commonality]
    reports = {}
    for mode in modes:
        estimator = copy.copy(loss)
        estimator.commonality = mode
        reports[mode] = commonality_report(
            estimator, f, g, labels, sharing, best, part_attributes
        )
    table = markdown_table(
        HEADERS, [row for report in reports.values() for row in report['rows']]
    )
    first = reports[modes[0]]
    print(
        f'\nCommonality sanity, SynthPedes {args.split} split: '
        f'{first["num_pairs"]} pairs of different identities '
        f"({len(person_ids)} images, estimators {modes}, the config's "
        f'{loss.commonality!r}); checkpoint {args.checkpoint}\n'
    )
    print(table)
    attribute_table = markdown_table(
        ATTRIBUTE_HEADERS,
        [row for report in reports.values() for row in report['attribute_rows']],
    )
    print(
        '\nAttribute by attribute: the estimate against agreement on each '
        "attribute of the query's part, and that agreement against the part's "
        'sharing (what an estimator that tracked the attribute alone would '
        'score on the table above)\n'
    )
    print(attribute_table)
    margins = effective_margins(loss, f, g, labels, args.batch)
    kept = 'all' if loss.negatives == 'all' else f'the {loss.negatives} hardest'
    print(
        f'\nMargins asked for in random batches of {args.batch} '
        f'(margin_mode={loss.margin_mode!r}, commonality={loss.commonality!r}): '
        f'mean {margins["all"]:.3f} over all '
        f'negatives, {margins["hardest"]:.3f} over {kept} (the ones the loss keeps).'
    )
    write_result(
        args,
        dict(
            commonality=modes[0],
            num_pairs=first['num_pairs'],
            parts=list(BODY_PARTS),
            best=[BODY_PARTS[b] for b in best],
            spearman=first['spearman'].tolist(),
            modes={
                mode: dict(
                    num_pairs=r['num_pairs'],
                    spearman=r['spearman'].tolist(),
                    spearman_own=r['spearman_own'].tolist(),
                    spearman_sample=r['spearman_sample'].tolist(),
                    spearman_score=r['spearman_score'].tolist(),
                    ceiling=r['ceiling'].tolist(),
                    attributes=[
                        {
                            name: {
                                key: _nan_to_none(value) for key, value in row.items()
                            }
                            for name, row in query.items()
                        }
                        for query in r['attributes']
                    ],
                )
                for mode, r in reports.items()
            },
            table=table,
            attribute_table=attribute_table,
            margins=dict(
                margins,
                batch=args.batch,
                negatives=loss.negatives,
                commonality=loss.commonality,
            ),
        ),
    )
    return 0


if __name__ == '__main__':
    sys.exit(main())
