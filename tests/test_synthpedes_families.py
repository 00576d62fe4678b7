"""SynthPedes families: generator, dataset fields, family batch sampler,
within-family metric and oracle commonality."""

import json
import os
import os.path as osp
from collections import Counter

import numpy as np
import pytest
import torch

from tbps_mm.datasets import SynthPedes
from tbps_mm.datasets.samplers import FamilyBatchSampler
from tbps_mm.datasets.synthpedes import generate_synthpedes, read_synthpedes_meta
from tbps_mm.datasets.synthpedes.attributes import (
    BODY_PARTS,
    family_member,
    part_attributes,
    part_value_distribution,
    sample_identity,
)
from tbps_mm.evaluation import grouped_rank_stats, summarize_rank_stats
from tbps_mm.evaluation.metrics import TBPSRetrievalMetric
from tbps_mm.models.losses import CommonalityMarginRankingLoss
from tbps_mm.registry import DATA_SAMPLERS

FAMILY = 4


def tree_bytes(root):
    files = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = osp.join(folder, name)
            with open(path, 'rb') as f:
                files[osp.relpath(path, root)] = f.read()
    return files


def generate(path, seed=0):
    return generate_synthpedes(
        str(path),
        'tiny',
        seed=seed,
        images_per_id=2,
        image_size=(48, 16),
        families=FAMILY,
        workers=1,
        progress=False,
    )


@pytest.fixture(scope='module')
def families_root(tmp_path_factory):
    return generate(tmp_path_factory.mktemp('families') / 'f')


@pytest.fixture(scope='module')
def table(families_root):
    with open(osp.join(families_root, 'attributes.json')) as f:
        return json.load(f)


def part_values(identity, part):
    return tuple(identity[n] for n in part_attributes(part))


def test_each_member_differs_from_its_base_in_exactly_one_part(table):
    people = {p['id']: p for p in table['identities']}
    assert table['families'] and len(people) == 24
    for family in table['families']:
        base = family['base']
        assert len(family['ids']) == FAMILY
        assert len(set(family['changed_parts'])) == FAMILY  # distinct parts
        for pid, changed in zip(family['ids'], family['changed_parts']):
            person = people[pid]
            assert person['family'] == family['family']
            assert person['changed_part'] == changed
            differ = [
                part
                for part in BODY_PARTS
                if part_values(person, part) != part_values(base, part)
            ]
            assert differ == [changed]
            for key in ('gender', 'build'):
                assert person[key] == base[key]
            assert person['rgb']['skin'] == base['rgb']['skin']
        # Two members share all but the two parts they changed.
        for a in family['ids']:
            for b in family['ids']:
                if a < b:
                    shared = sum(
                        part_values(people[a], p) == part_values(people[b], p)
                        for p in BODY_PARTS
                    )
                    assert shared == len(BODY_PARTS) - 2


def test_splits_are_family_disjoint_with_the_standard_sizes(families_root, table):
    splits = {}
    for person in table['identities']:
        splits.setdefault(person['family'], set()).add(person['split'])
    assert all(len(s) == 1 for s in splits.values())
    meta = read_synthpedes_meta(families_root)
    assert meta['families'] == FAMILY
    counts = {s: meta['splits'][s]['ids'] for s in ('train', 'val', 'test')}
    assert counts == {'train': 12, 'val': 4, 'test': 8}  # the tiny preset's
    assert {s: meta['splits'][s]['families'] for s in counts} == {
        'train': 3,
        'val': 1,
        'test': 2,
    }


def test_families_are_deterministic_from_the_seed(families_root, tmp_path):
    again = tree_bytes(generate(tmp_path / 'again'))
    assert again == tree_bytes(families_root)
    other = generate(tmp_path / 'other', seed=1)
    with open(osp.join(other, 'attributes.json')) as f:
        assert (
            json.load(f)['families'] != json.loads(again['attributes.json'])['families']
        )


@pytest.mark.parametrize(
    'kwargs, message',
    [
        (dict(families=1), 'between 2 and 5'),
        (dict(families=6), 'between 2 and 5'),
        (dict(families=True), 'must be an integer'),
        (dict(families=4, num_ids=30), 'multiple'),
    ],
)
def test_bad_family_arguments_are_refused(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate_synthpedes(str(tmp_path / 'x'), 'tiny', progress=False, **kwargs)


def test_member_keeps_the_prior_marginals_and_always_changes():
    part = 'carried'
    names = part_attributes(part)
    counts, n = Counter(), 4000
    for i in range(n):
        base = sample_identity(np.random.default_rng([5, i]))
        member = family_member(base, part, np.random.default_rng([6, i]))
        assert part_values(member, part) != part_values(base, part)
        counts[member['carried']] += 1
    prior = Counter()
    for values, p in part_value_distribution(part, 'male'):
        prior[values[names.index('carried')]] += p
    for value, p in prior.items():  # 4000 draws: 4 standard errors at most ~0.03
        assert abs(counts[value] / n - p) < 4 * (p * (1 - p) / n) ** 0.5 + 1e-3


def test_dataset_items_carry_family_and_part_codes(families_root, table):
    ds = SynthPedes(
        data_root=families_root,
        size='tiny',
        seed=0,
        families=FAMILY,
        with_part_codes=True,
        split='test',
    )
    people = {p['id']: p for p in table['identities']}
    assert ds.metainfo['family_size'] == FAMILY
    for i in range(len(ds)):
        item = ds.get_data_info(i)
        person = people[item['person_id']]
        assert item['family_id'] == person['family']
        assert item['part_codes'].shape == (len(BODY_PARTS),)
    # Equal codes exactly where the part's attribute values are equal.
    items = [ds.get_data_info(i) for i in range(len(ds))]
    for a in items[:8]:
        for b in items[:8]:
            for k, part in enumerate(BODY_PARTS):
                same = part_values(people[a['person_id']], part) == part_values(
                    people[b['person_id']], part
                )
                assert (a['part_codes'][k] == b['part_codes'][k]) == same
    with pytest.raises(ValueError, match='families'):
        SynthPedes(data_root=families_root, size='tiny', seed=0, split='test')


@pytest.fixture(scope='module')
def train_set(families_root):
    return SynthPedes(
        data_root=families_root, size='tiny', seed=0, families=FAMILY, split='train'
    )


def test_sampler_batches_hold_whole_families(train_set):
    sampler = DATA_SAMPLERS.build(
        dict(type='FamilyBatchSampler', batch_size=16, pairs_per_id=2, seed=3),
        default_args=dict(dataset=train_set),
    )
    order = list(sampler)
    assert len(order) == len(sampler) == len(train_set)  # 2 images x 2 captions
    assert sorted(order) == list(range(len(train_set)))
    for start in range(0, len(order), 16):
        batch = [train_set.get_data_info(i) for i in order[start : start + 16]]
        for block in range(0, len(batch), 8):  # a block: one family, 2 pairs each
            members = batch[block : block + 8]
            assert len({m['family_id'] for m in members}) == 1
            assert Counter(m['gt_label'] for m in members) == Counter(
                {label: 2 for label in {m['gt_label'] for m in members}}
            )
            assert len({m['gt_label'] for m in members}) == FAMILY
    assert order == list(sampler)  # deterministic within an epoch
    sampler.set_epoch(1)
    assert list(sampler) != order


def test_sampler_refuses_bad_settings(train_set, families_root):
    with pytest.raises(ValueError, match='multiple'):
        FamilyBatchSampler(train_set, batch_size=12, pairs_per_id=2)
    plain = generate_synthpedes(
        osp.join(families_root + '_plain'),
        'tiny',
        images_per_id=1,
        image_size=(48, 16),
        progress=False,
    )
    standard = SynthPedes(data_root=plain, size='tiny', seed=0, split='train')
    with pytest.raises(ValueError, match='family_id'):
        FamilyBatchSampler(standard, batch_size=8)


def test_within_group_ranking_hand_worked():
    # gallery: family 0 = persons 0, 1; family 1 = persons 2, 3
    gallery_labels = [0, 1, 2, 3]
    gallery_groups = [0, 0, 1, 1]
    sim = torch.tensor(
        [
            [0.5, 0.4, 0.9, 0.9],  # person 0: wins in its family (others' 0.9 ignored)
            [0.5, 0.4, 0.0, 0.0],  # person 1: loses to person 0
            [0.0, 0.0, 0.3, 0.3],  # person 2: tied with person 3 -> 1/2
        ]
    )
    stats = grouped_rank_stats(
        sim, [0, 1, 2], gallery_labels, [0, 0, 1], gallery_groups
    )
    assert stats['first_rank'].tolist() == [1.0, 2.0, 1.5]
    summary = summarize_rank_stats(stats, (1,))
    assert summary['R1'] == pytest.approx(100 * 1.5 / 3)


def test_within_group_constant_scores_score_chance():
    labels = torch.arange(12).repeat_interleave(2)  # 12 people x 2 images
    groups = labels // 4  # families of 4
    sim = torch.zeros(12, 24)
    stats = grouped_rank_stats(
        sim, torch.arange(12), labels, torch.arange(12) // 4, groups
    )
    # 2 correct among 8 tied: P(first is correct) = 2 / 8 = 1 / family size
    assert summarize_rank_stats(stats, (1,))['R1'] == pytest.approx(25.0)


def test_within_group_refuses_a_single_identity_group():
    with pytest.raises(ValueError, match='at least 2'):
        grouped_rank_stats([[1.0, 0.0]], [0], [0, 1], [0], [0, 1])


def record(idx, modality, label, family, embed):
    key = 'img' if modality == 'image' else 'text'
    return {
        'sample_idx': idx,
        'modality': modality,
        'gt_label': label,
        'family_id': family,
        f'{key}_embed': torch.tensor(embed),
        'fusion_weight': 1.0,
    }


def test_metric_reports_within_family_numbers():
    metric = TBPSRetrievalMetric(within_family=True, topk=(1,))
    samples = [
        record(0, 'image', 0, 0, [1.0, 0.0]),
        record(1, 'image', 1, 0, [0.0, 1.0]),
        record(2, 'image', 2, 1, [1.0, 0.0]),
        record(3, 'image', 3, 1, [0.9, 0.1]),
        record(4, 'text', 0, 0, [1.0, 0.0]),  # right
        record(5, 'text', 1, 0, [1.0, 0.0]),  # wrong: person 0 scores higher
        record(6, 'text', 2, 1, [1.0, 0.0]),  # right
        record(7, 'text', 3, 1, [1.0, 0.0]),  # wrong
    ]
    metric.process(None, samples)
    out = metric.compute_metrics(metric.results)
    assert out['t2i-family/R1'] == pytest.approx(50.0)
    assert out['t2i-family-coarse/R1'] == pytest.approx(50.0)
    # Without family ids the option fails loudly.
    metric = TBPSRetrievalMetric(within_family=True)
    for s in samples:
        s.pop('family_id')
    metric.process(None, samples)
    with pytest.raises(KeyError, match='family_id'):
        metric.compute_metrics(metric.results)


def test_oracle_commonality_and_margins():
    loss = CommonalityMarginRankingLoss(commonality='oracle', margin_max=0.3)
    codes = torch.tensor([[0, 1], [0, 2], [3, 1]])  # (B, K)
    parts = torch.nn.functional.normalize(torch.randn(2, 3, 4), dim=-1)
    common = loss.part_commonality(parts, parts, torch.arange(3), part_codes=codes)
    expected = torch.tensor(
        [
            [[1, 1, 0], [1, 1, 0], [0, 0, 1]],  # part 0: samples 0 and 1 share it
            [[1, 0, 1], [0, 1, 0], [1, 0, 1]],  # part 1: samples 0 and 2
        ],
        dtype=torch.float32,
    )
    assert torch.equal(common, expected)
    margins = loss.part_margins(parts, parts, torch.arange(3), part_codes=codes)
    assert margins[0, 0, 1] == pytest.approx(loss.margin_min)
    assert margins[0, 0, 2] == pytest.approx(0.3)
    assert loss.needs_part_codes
    value = loss(parts.transpose(0, 1), parts.transpose(0, 1), torch.arange(3), codes)
    assert torch.isfinite(value)
    with pytest.raises(ValueError, match='part_codes'):
        loss(parts.transpose(0, 1), parts.transpose(0, 1), torch.arange(3))
    with pytest.raises(ValueError, match=r'\(B, K\)'):
        loss(
            parts.transpose(0, 1),
            parts.transpose(0, 1),
            torch.arange(3),
            codes[:, :1],
        )
    with pytest.raises(ValueError, match='gather'):
        CommonalityMarginRankingLoss(commonality='oracle', gather=True)


def test_oracle_parts_pick_the_body_part_of_each_query():
    # Five coded parts, two queries standing for parts 3 and 0.
    codes = torch.tensor([[0, 5, 5, 1, 9], [0, 6, 6, 2, 9], [4, 7, 7, 1, 9]])
    loss = CommonalityMarginRankingLoss(commonality='oracle', oracle_parts=(3, 0))
    parts = torch.nn.functional.normalize(torch.randn(2, 3, 4), dim=-1)
    common = loss.part_commonality(parts, parts, torch.arange(3), part_codes=codes)
    expected = torch.tensor(
        [
            [[1, 0, 1], [0, 1, 0], [1, 0, 1]],  # part 3: samples 0 and 2
            [[1, 1, 0], [1, 1, 0], [0, 0, 1]],  # part 0: samples 0 and 1
        ],
        dtype=torch.float32,
    )
    assert torch.equal(common, expected)
    with pytest.raises(ValueError, match='do not have'):
        CommonalityMarginRankingLoss(
            commonality='oracle', oracle_parts=(0, 7)
        ).part_commonality(parts, parts, torch.arange(3), part_codes=codes)
    with pytest.raises(ValueError, match=r'\(B, K\)'):
        CommonalityMarginRankingLoss(
            commonality='oracle', oracle_parts=(0, 1, 2)
        ).part_commonality(parts, parts, torch.arange(3), part_codes=codes)
    for bad in ((), (-1, 0), (0.5,), (True,)):
        with pytest.raises(ValueError, match='oracle_parts must be'):
            CommonalityMarginRankingLoss(commonality='oracle', oracle_parts=bad)


def test_kept_margin_is_logged_on_request():
    parts = torch.randn(6, 2, 8)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    fixed = CommonalityMarginRankingLoss(
        margin_mode='fixed', margin_max=0.2, negatives=2, log_kept_margin=True
    )
    fixed(parts, parts.clone(), labels)
    assert float(fixed.last_stats['kept_margin']) == pytest.approx(0.2)
    silent = CommonalityMarginRankingLoss(negatives=2)
    silent(parts, parts.clone(), labels)
    assert silent.last_stats == {}


def load_tool(relpath):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / relpath
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tool_writes_families_and_refuses_bad_ones(tmp_path, capsys):
    tool = load_tool('tools/dataset_converters/make_synthpedes.py')
    common = ['--size', 'tiny', '--images-per-id', '1', '--image-size', '48', '16']
    code = tool.main([str(tmp_path / 'f'), *common, '--families', '4', '--no-progress'])
    assert code == 0
    assert 'families of 4' in capsys.readouterr().out
    assert read_synthpedes_meta(str(tmp_path / 'f'))['families'] == 4
    code = tool.main([str(tmp_path / 'g'), *common, '--families', '7', '--no-progress'])
    assert code == 1
    assert 'error: families must be between 2 and 5' in capsys.readouterr().err
    assert not osp.exists(tmp_path / 'g')
