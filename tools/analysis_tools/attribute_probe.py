"""Are SynthPedes caption attributes recoverable from the images?

SynthPedes must leave room for part-level matching: a global-embedding model
trained at the quick-start budget stays below saturation, *while* what the
captions say can still be read off the pixels. This script measures the
second half directly, with the generator's ground truth
(``attributes.json``):

1. **Attribute classifier.** The quick-start image encoder (the config's
   ``model.image_encoder``, randomly initialised) with one linear head per
   attribute on its flattened feature map, trained from scratch by
   MMEngine's Runner on the train split's images against their identity's
   attributes (an absent item's colour is its own class, ``n/a``): the
   config's optimizer (AdamW, gradient clipping), a fixed number of
   iterations (linear warm-up, then cosine decay), batch 64, no
   augmentation. On the test split it reports per-attribute accuracy
   against the majority-class baseline (the most frequent train value),
   grouped by body part.
2. **Attribute-matching retrieval.** Each test caption's mentioned
   attributes (``attributes.json`` ``images[...]['mentions']``: the
   generator's parse, not a text model) scored against every test image by
   the classifier's log-probabilities, ``score(q, j) = sum_{a in q}
   log p_j(a = v_q(a))``, then ranked with ``rank_metrics``. The same with
   the true attributes of each image's identity (the number of mentioned
   attributes that match, ties counted against the query) is the oracle:
   what a model that recognised every attribute would reach.

The classifier is a probe, not a TBPS model: it is given the attribute
vocabulary and the caption parse, which a TBPS model must learn from text.
If its retrieval beats the global-only TBPS model at a similar compute
budget, the gap is recognition the TBPS model has not converted into
matching, i.e. room for part-level matching.

What is written here and why: the probe model (an MMEngine ``BaseModel``
whose loss is the summed cross-entropy of its heads) and its in-memory
dataset of decoded images and attribute labels. Neither is a TBPS component
(they exist for this question only), so they are handed to the Runner as
objects instead of being registered. Scoring captions by predicted
attributes is a sum of log-probabilities, not an embedding product, so it is
ranked by ``rank_metrics`` (the function behind ``TBPSRetrievalMetric``).

Example:
    python tools/analysis_tools/attribute_probe.py --steps 1000 \\
        --out benchmarks/results/attribute_probe.json
"""

import argparse
import os.path as osp
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from _harness import iteration_schedule, load_attributes, write_result
from mmengine.config import DictAction
from mmengine.model import BaseModel
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

import tbps_mm  # noqa: F401  (registers every component)
from tbps_mm.engine import load_config
from tbps_mm.evaluation import markdown_table, rank_metrics
from tbps_mm.registry import DATASETS, MODELS

NOT_APPLICABLE = 'n/a'


def class_index(vocab: Dict[str, List[str]], identity: Dict, attribute: str) -> int:
    """The class of an identity's attribute (an absent item's colour: n/a)."""
    return vocab[attribute].index(identity[attribute] or NOT_APPLICABLE)


def person_id(rel_path: str) -> int:
    """The identity of ``<split>/<id>/<file>.jpg``."""
    return int(osp.basename(osp.dirname(rel_path)))


def encoder_features(encoder: nn.Module, images: Tensor) -> Tensor:
    """The encoder's last output (a CNN's map, a ViT's tokens), flattened."""
    feats = encoder(images)
    return (feats[-1] if isinstance(feats, (tuple, list)) else feats).flatten(1)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument(
        '--config',
        default='configs/tbps_synth.py',
        help='SynthPedes config: its data_root and image encoder are used',
    )
    parser.add_argument('--steps', type=int, default=1000, help='training steps')
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--lr', type=float, default=2e-3, help='AdamW learning rate')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--threads', type=int, default=None, help='torch threads')
    parser.add_argument('--out', help='write the result as JSON here')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction, help='config overrides'
    )
    args = parser.parse_args(argv)
    if args.steps < 2 or args.batch_size < 2:
        parser.error('--steps and --batch-size must be >= 2')
    return args


def load_images(
    data_root: str, attrs: Dict, split: str, mean: Tensor, std: Tensor
) -> Tuple[Tensor, List[str]]:
    """Normalised (N, 3, H, W) images of a split and their relative paths."""
    paths = sorted(p for p in attrs['images'] if p.split('/', 1)[0] == split)
    if not paths:
        raise ValueError(
            f'{osp.join(data_root, "attributes.json")}: no images of split {split!r}'
        )
    arrays = []
    for rel in paths:
        with Image.open(osp.join(data_root, 'imgs', rel)) as img:
            arrays.append(np.asarray(img.convert('RGB')))
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float()
    return (images - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1), paths


def attribute_labels(
    attrs: Dict, paths: List[str]
) -> Tuple[Dict[str, List[str]], Tensor, List[int]]:
    """Class vocabulary per attribute, (N, A) label indices, person ids."""
    by_id = {ident['id']: ident for ident in attrs['identities']}
    names = sorted(attrs['values'])
    # An item's colour is absent when the item is: its own class then.
    absent = {a for ident in attrs['identities'] for a in names if ident[a] is None}
    vocab = {
        a: [*attrs['values'][a], *([NOT_APPLICABLE] if a in absent else [])]
        for a in names
    }
    person_ids = [person_id(p) for p in paths]
    labels = torch.tensor(
        [[class_index(vocab, by_id[pid], a) for a in names] for pid in person_ids]
    )
    return vocab, labels, person_ids


class AttributeSet(Dataset):
    """Decoded images with their attribute labels, as the Runner's data.

    Args:
        images (Tensor): (N, 3, H, W) normalised images.
        labels (Tensor): (N, A) class index of every attribute.
    """

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        return dict(inputs=self.images[index], data_samples=self.labels[index])


class AttributeProbe(BaseModel):
    """An image encoder with one linear classifier per attribute.

    Args:
        encoder (nn.Module): The image encoder (built from the config).
        feat_dims (int): Size of the encoder's flattened last output.
        vocab (dict): Attribute -> class names, in label order.
    """

    def __init__(self, encoder: nn.Module, feat_dims: int, vocab: Dict) -> None:
        super().__init__()
        self.encoder = encoder
        self.heads = nn.ModuleDict(
            {a: nn.Linear(feat_dims, len(v)) for a, v in vocab.items()}
        )

    def forward(
        self,
        inputs: Tensor,
        data_samples: Optional[Tensor] = None,
        mode: str = 'tensor',
    ):
        """Logits per attribute; ``mode='loss'``: summed cross-entropy.

        Args:
            inputs (Tensor): (B, 3, H, W) images.
            data_samples (Tensor, optional): (B, A) labels (``'loss'`` mode).
            mode (str): ``'loss'`` or ``'tensor'``.

        Returns:
            dict: ``{'loss': ...}`` or ``{attribute: (B, classes) logits}``.
        """
        feats = encoder_features(self.encoder, inputs)
        logits = {a: head(feats) for a, head in self.heads.items()}
        if mode != 'loss':
            return logits
        loss = sum(
            F.cross_entropy(logits[a], data_samples[:, i])
            for i, a in enumerate(self.heads)
        )
        return dict(loss=loss)


def train_probe(
    model: AttributeProbe, images: Tensor, labels: Tensor, cfg, args
) -> float:
    """Train with MMEngine's Runner for ``args.steps`` iterations.

    Args:
        model (AttributeProbe): The probe.
        images (Tensor): (N, 3, H, W) training images.
        labels (Tensor): (N, A) their labels.
        cfg (Config): The config whose ``optim_wrapper`` is used.
        args (argparse.Namespace): ``steps``, ``batch_size``, ``lr``, ``seed``.

    Returns:
        float: The mean loss of the last 50 steps.
    """
    optim_wrapper = cfg.optim_wrapper.copy()
    optim_wrapper['optimizer'] = dict(optim_wrapper['optimizer'], lr=args.lr)
    loader = DataLoader(
        AttributeSet(images, labels),
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(args.seed),
    )
    with tempfile.TemporaryDirectory() as work_dir:
        runner = Runner(
            model=model,
            work_dir=work_dir,
            train_dataloader=loader,
            train_cfg=dict(by_epoch=False, max_iters=args.steps),
            optim_wrapper=optim_wrapper,
            param_scheduler=iteration_schedule(args.steps),
            default_hooks=dict(
                checkpoint=None, logger=dict(type='LoggerHook', interval=100)
            ),
            log_processor=dict(by_epoch=False),
            randomness=dict(seed=args.seed),
            default_scope=cfg.get('default_scope', 'tbps_mm'),
        )
        runner.train()
        return float(runner.message_hub.get_scalar('train/loss').mean(50))


@torch.no_grad()
def predict_log_probs(
    model: AttributeProbe, images: Tensor, chunk: int = 256
) -> Dict[str, Tensor]:
    """Log-probabilities of every class of every attribute, (N, classes)."""
    model.eval()
    outs = [model(images[i : i + chunk]) for i in range(0, len(images), chunk)]
    return {a: torch.cat([o[a] for o in outs]).log_softmax(-1) for a in model.heads}


def caption_queries(
    attrs: Dict, paths: List[str], vocab: Dict
) -> Tuple[List[Dict[str, int]], List[int]]:
    """Each caption's mentioned attributes as {attribute: class index}."""
    by_id = {ident['id']: ident for ident in attrs['identities']}
    queries, labels = [], []
    for rel in paths:
        pid = person_id(rel)
        for mentioned in attrs['images'][rel]['mentions']:
            queries.append({a: class_index(vocab, by_id[pid], a) for a in mentioned})
            labels.append(pid)
    return queries, labels


def query_scores(queries: List[Dict[str, int]], log_probs: Dict[str, Tensor]) -> Tensor:
    """(Q, G) sums over each query's attributes of ``log_probs[a][:, value]``."""
    scores = torch.zeros(len(queries), next(iter(log_probs.values())).shape[0])
    for q, query in enumerate(queries):
        for a, value in query.items():
            scores[q] += log_probs[a][:, value]
    return scores


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    cfg = load_config(args.config, args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'tbps_mm'))
    # Building the dataset generates SynthPedes on first use, as training does.
    dataset = DATASETS.build(dict(cfg.train_dataloader.dataset, pipeline=[]))
    data_root = dataset.data_root
    attrs = load_attributes(data_root)
    preprocessor = MODELS.build(
        cfg.model.get('data_preprocessor') or dict(type='TBPSDataPreprocessor')
    )
    mean, std = preprocessor.mean.view(3), preprocessor.std.view(3)
    train_images, train_paths = load_images(data_root, attrs, 'train', mean, std)
    test_images, test_paths = load_images(data_root, attrs, 'test', mean, std)
    vocab, train_labels, _ = attribute_labels(attrs, train_paths)
    _, test_labels, test_ids = attribute_labels(attrs, test_paths)

    # The Runner applies the encoder's init_cfg when training starts, as in a
    # full run.
    encoder = MODELS.build(cfg.model.image_encoder)
    with torch.no_grad():
        feat_dims = encoder_features(encoder, train_images[:2]).shape[1]
    model = AttributeProbe(encoder, feat_dims, vocab)
    start = time.perf_counter()
    final_loss = train_probe(model, train_images, train_labels, cfg, args)
    train_s = time.perf_counter() - start
    log_probs = predict_log_probs(model, test_images)

    names = list(vocab)
    per_attribute = {}
    for i, a in enumerate(names):
        majority = int(torch.bincount(train_labels[:, i]).argmax())
        per_attribute[a] = dict(
            part=attrs['attribute_parts'][a],
            classes=len(vocab[a]),
            accuracy=100.0
            * float((log_probs[a].argmax(-1) == test_labels[:, i]).float().mean()),
            majority=100.0 * float((test_labels[:, i] == majority).float().mean()),
        )

    queries, query_ids = caption_queries(attrs, test_paths, vocab)
    retrieval = dict(
        probe=rank_metrics(query_scores(queries, log_probs), query_ids, test_ids)
    )
    # The oracle scores with one-hot true labels in place of log-probabilities:
    # the count of mentioned attributes each image's identity has. Scores are
    # integers, so subtracting 0.5 from the correct images puts them below
    # every tie (the optimistic "1 + #higher" rank would not).
    one_hot = {
        a: F.one_hot(test_labels[:, i], len(vocab[a])).float()
        for i, a in enumerate(names)
    }
    true_scores = query_scores(queries, one_hot)
    match = torch.tensor(query_ids)[:, None] == torch.tensor(test_ids)[None, :]
    retrieval['oracle'] = rank_metrics(
        true_scores - 0.5 * match.float(), query_ids, test_ids
    )

    rows = [
        [a, r['part'], r['classes'], f'{r["majority"]:.1f}', f'{r["accuracy"]:.1f}']
        for a, r in sorted(per_attribute.items(), key=lambda kv: (kv[1]['part'], kv[0]))
    ]
    mean_acc = np.mean([r['accuracy'] for r in per_attribute.values()])
    mean_maj = np.mean([r['majority'] for r in per_attribute.values()])
    rows.append(['mean', '', '', f'{mean_maj:.1f}', f'{mean_acc:.1f}'])
    print(
        f'\nattribute probe: {args.steps} steps x batch {args.batch_size}, '
        f'lr {args.lr:g}, seed {args.seed}; training {train_s:.0f} s; '
        f'test split of {data_root!r} '
        f'({len(test_paths)} images, {len(queries)} captions)\n'
    )
    print(
        markdown_table(['attribute', 'part', 'classes', 'majority %', 'probe %'], rows)
    )
    print()
    print(
        markdown_table(
            ['retrieval (t2i)', 'R@1', 'R@5', 'R@10', 'mAP'],
            [
                [label, *(f'{m[k]:.2f}' for k in ('R1', 'R5', 'R10', 'mAP'))]
                for label, m in (
                    (
                        'attribute probe (log-prob of mentioned values)',
                        retrieval['probe'],
                    ),
                    ('oracle (true attributes, ties against)', retrieval['oracle']),
                )
            ],
        )
    )
    write_result(
        args,
        dict(
            steps=args.steps,  # read by synthpedes_difficulty.py
            train_seconds=train_s,
            final_loss=final_loss,
            per_attribute=per_attribute,
            retrieval=retrieval,
        ),
    )
    return 0


if __name__ == '__main__':
    sys.exit(main())
