"""SDMLoss, IDLoss, CommonalityMarginRankingLoss and PartDiversityLoss."""

import math

import pytest
import torch
import torch.nn.functional as F

from tbps_mm.models.losses import (
    CommonalityMarginRankingLoss,
    IDLoss,
    PartDiversityLoss,
    SDMLoss,
)
from tbps_mm.registry import MODELS


def _sdm_reference(img, txt, labels, tau=0.02, eps=1e-8):
    """SDM written out entry by entry (the definition, not the vectorised code)."""
    img, txt = F.normalize(img, dim=1), F.normalize(txt, dim=1)
    B = len(labels)
    total = 0.0
    for a, b in ((txt, img), (img, txt)):
        for i in range(B):
            logits = [float(a[i] @ b[j]) / tau for j in range(B)]
            norm = math.log(sum(math.exp(x) for x in logits))
            matches = sum(int(labels[i] == labels[j]) for j in range(B))
            for j in range(B):
                p = math.exp(logits[j] - norm)
                q = int(labels[i] == labels[j]) / matches
                total += p * (logits[j] - norm - math.log(q + eps)) / B
    return total


def test_sdm_matches_definition_and_rewards_alignment():
    torch.manual_seed(0)
    img, txt = (
        torch.randn(5, 8, dtype=torch.float64),
        torch.randn(5, 8, dtype=torch.float64),
    )
    labels = torch.tensor([0, 0, 1, 2, 2])
    loss = SDMLoss(temperature=0.02)(img, txt, labels)
    assert loss.item() == pytest.approx(_sdm_reference(img, txt, labels), rel=1e-6)
    # Aligned pairs of distinct people score far lower than random ones.
    base = torch.eye(5, 8)
    unique = torch.arange(5)
    assert SDMLoss()(base, base, unique) < 1e-3 < SDMLoss()(img, txt, unique)
    scaled = SDMLoss(loss_weight=2.0)(img, txt, labels)
    assert scaled.item() == pytest.approx(2 * loss.item(), rel=1e-6)


def test_sdm_learnable_temperature_is_a_parameter():
    loss = SDMLoss(temperature=0.05, learnable_temperature=True)
    assert [n for n, _ in loss.named_parameters()] == ['log_logit_scale']
    assert loss.logit_scale.item() == pytest.approx(20.0)
    out = loss(torch.randn(4, 6), torch.randn(4, 6), torch.tensor([0, 1, 2, 3]))
    out.backward()
    assert loss.log_logit_scale.grad is not None
    assert list(SDMLoss().state_dict()) == []  # a fixed scale is not saved


def test_id_loss_is_mean_cross_entropy_and_checks_labels():
    torch.manual_seed(0)
    loss = IDLoss(in_channels=6, num_classes=4)
    img, txt, labels = torch.randn(3, 6), torch.randn(3, 6), torch.tensor([0, 3, 1])
    expected = 0.5 * (
        F.cross_entropy(loss.classifier(img), labels)
        + F.cross_entropy(loss.classifier(txt), labels)
    )
    torch.testing.assert_close(loss(img, txt, labels), expected)
    with pytest.raises(ValueError, match='label 4 .*num_classes=4'):
        loss(img, txt, torch.tensor([0, 4, 1]))


def _cmr(**kwargs):
    return CommonalityMarginRankingLoss(margin_max=0.4, margin_min=0.1, **kwargs)


def test_cmr_shared_part_gets_a_smaller_loss_than_fixed_margin():
    # Two identities; part 0 is the same for both (black trousers on both),
    # part 1 differs. The shared part's margin shrinks to margin_min.
    shared = torch.tensor([1.0, 0.0, 0.0])
    img = torch.stack(
        [
            torch.stack([shared, torch.tensor([0.0, 1.0, 0.0])]),
            torch.stack([shared, torch.tensor([0.0, 0.0, 1.0])]),
        ]
    )
    labels = torch.tensor([0, 1])
    common = _cmr(margin_mode='commonality')(img, img.clone(), labels)
    fixed = _cmr(margin_mode='fixed')(img, img.clone(), labels)
    assert common < fixed
    # Hand values: shared part hinge = margin (s_pos = s_neg = 1); distinct
    # part hinge = [0.4 - 1 + 0]_+ = 0; 2 parts, 2 directions.
    assert fixed.item() == pytest.approx(2 * (0.4 + 0.0) / 2)
    assert common.item() == pytest.approx(2 * (0.1 + 0.0) / 2)


@pytest.mark.parametrize('commonality', ['pair', 'sample'])
@pytest.mark.parametrize('negatives', ['all', 2])
def test_cmr_orthogonal_parts_give_the_same_loss_in_both_modes(commonality, negatives):
    # Every identity's parts live in its own subspace, orthogonal to every
    # other identity's parts in both modalities, so commonality is 0 and the
    # margin is margin_max everywhere. Within an identity the caption's part
    # only partly matches the image's, so the hinges are active.
    B, K = 4, 3
    basis = torch.eye(B * K).view(B, K, B * K)
    txt = basis + 2 * basis.roll(1, dims=1)
    labels = torch.arange(B)
    kw = dict(
        margin_max=0.8, margin_min=0.1, commonality=commonality, negatives=negatives
    )
    common = CommonalityMarginRankingLoss(margin_mode='commonality', **kw)
    fixed = CommonalityMarginRankingLoss(margin_mode='fixed', **kw)
    c = common.part_commonality(
        basis.transpose(0, 1), F.normalize(txt, dim=-1).transpose(0, 1), labels
    )
    off_diagonal = ~torch.eye(B, dtype=torch.bool)
    assert c.expand(K, B, B)[:, off_diagonal].abs().max() == 0
    torch.testing.assert_close(common(basis, txt, labels), fixed(basis, txt, labels))
    # Hand value: every hinge is 0.8 - 1/sqrt(5) (both directions summed).
    expected = 2 * (0.8 - 1 / math.sqrt(5))
    assert fixed(basis, txt, labels).item() == pytest.approx(expected, rel=1e-5)


def test_cmr_margin_formula_and_floor():
    loss = _cmr()
    f = F.normalize(torch.tensor([[[1.0, 0.0]], [[0.6, 0.8]], [[0.0, 1.0]]]), dim=-1)
    labels = torch.tensor([0, 1, 2])
    c = loss.part_commonality(f.transpose(0, 1), f.transpose(0, 1), labels)
    torch.testing.assert_close(c[0, 0], torch.tensor([1.0, 0.6, 0.0]))
    margin = (0.4 * (1 - c)).clamp(min=0.1)
    torch.testing.assert_close(margin[0, 0], torch.tensor([0.1, 0.16, 0.4]))


def test_cmr_sample_commonality_counts_identities():
    # Part 0 of ids 0, 1, 2 is identical, id 3 differs: ids 0-2 share it with
    # 2 of 3 other identities, id 3 with none.
    same, other = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    parts = torch.stack([same, same, same, other]).unsqueeze(1)
    labels = torch.tensor([0, 1, 2, 3])
    loss = _cmr(commonality='sample')
    c = loss.part_commonality(parts.transpose(0, 1), parts.transpose(0, 1), labels)
    torch.testing.assert_close(c[0, :, 0], torch.tensor([2 / 3, 2 / 3, 2 / 3, 0.0]))


def test_cmr_hardest_negatives_and_gradients():
    torch.manual_seed(0)
    img = torch.randn(6, 3, 8, requires_grad=True)
    txt = torch.randn(6, 3, 8, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    all_neg = _cmr(negatives='all')(img, txt, labels)
    hardest = _cmr(negatives=1)(img, txt, labels)
    many = _cmr(negatives=100)(img, txt, labels)  # more than exist = all
    assert hardest > all_neg
    torch.testing.assert_close(many, all_neg)
    hardest.backward()
    assert img.grad.abs().sum() > 0 and txt.grad.abs().sum() > 0
    # Commonality carries no gradient.
    common = _cmr().part_commonality(img.transpose(0, 1), txt.transpose(0, 1), labels)
    assert not common.requires_grad


def test_cmr_without_negatives_is_zero_but_attached():
    img = torch.randn(3, 2, 4, requires_grad=True)
    loss = _cmr()(img, img * 2, torch.tensor([1, 1, 1]))
    assert loss.item() == 0.0 and loss.requires_grad


def test_cmr_bad_input_and_options():
    with pytest.raises(ValueError, match='margin_mode'):
        CommonalityMarginRankingLoss(margin_mode='soft')
    with pytest.raises(ValueError, match='negatives'):
        CommonalityMarginRankingLoss(negatives=0)
    with pytest.raises(ValueError, match='shape'):
        _cmr()(torch.randn(2, 3, 4), torch.randn(2, 2, 4), torch.tensor([0, 1]))


def test_cmr_is_built_from_config_with_the_documented_interface():
    loss = MODELS.build(
        dict(
            type='CommonalityMarginRankingLoss',
            margin_max=0.5,
            margin_min=0.1,
            margin_mode='fixed',
            commonality='sample',
            negatives=3,
            loss_weight=2.0,
        )
    )
    assert (loss.margin_max, loss.negatives, loss.loss_weight) == (0.5, 3, 2.0)
    default = CommonalityMarginRankingLoss()
    assert (default.margin_mode, default.commonality, default.negatives) == (
        'commonality',
        'pair',
        'all',
    )


def test_part_diversity_loss():
    same = torch.tensor([[[0.5, 0.5, 0.0], [0.5, 0.5, 0.0]]])
    disjoint = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]]])
    loss = PartDiversityLoss()
    assert loss(same, same).item() == pytest.approx(1.0)
    assert loss(disjoint, disjoint).item() == pytest.approx(0.0)
    assert loss(same, disjoint).item() == pytest.approx(0.5)


def test_losses_stay_finite_and_accurate_with_half_precision_inputs():
    # Under AMP the head outputs float16; SDM's epsilon underflows there.
    torch.manual_seed(0)
    img, txt = torch.randn(6, 8), torch.randn(6, 8)
    parts_i, parts_t = torch.randn(6, 3, 8), torch.randn(6, 3, 8)
    labels = torch.tensor([0, 0, 1, 1, 2, 3])
    for loss, args in (
        (SDMLoss(), (img, txt)),
        (CommonalityMarginRankingLoss(), (parts_i, parts_t)),
    ):
        full = loss(*args, labels)
        half = loss(*(a.half() for a in args), labels)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            autocast = loss(*args, labels)
        assert half.dtype == torch.float32 and torch.isfinite(half)
        torch.testing.assert_close(half, full, atol=2e-2, rtol=1e-2)
        torch.testing.assert_close(autocast, full)


def test_concentration_loss_is_the_spatial_variance_of_each_map():
    from tbps_mm.models.losses import PartConcentrationLoss

    loss = PartConcentrationLoss(grid=(4, 2), loss_weight=2.0)
    one_cell = torch.zeros(3, 2, 8)
    one_cell[..., 5] = 1.0
    assert float(loss(one_cell)) == pytest.approx(0.0, abs=1e-7)
    uniform = torch.full((3, 2, 8), 1 / 8)
    # Rows 0..3 and columns 0..1 in units of 1/4: (15 + 3) / (12 * 16).
    assert float(loss(uniform)) == pytest.approx(2.0 * 18 / 192, rel=1e-5)
    # Two cells of one column, two rows apart: variance (2/4)^2 / 4.
    pair = torch.zeros(1, 1, 8)
    pair[0, 0, [0, 4]] = 0.5
    assert float(loss(pair)) == pytest.approx(2.0 * 0.0625, rel=1e-5)
    attn = torch.rand(2, 3, 8, requires_grad=True)
    loss(attn.softmax(-1)).backward()
    assert attn.grad.abs().sum() > 0
    with pytest.raises(ValueError, match='does not cover the 4x2 token grid'):
        loss(torch.rand(2, 3, 9).softmax(-1))
    with pytest.raises(ValueError, match='grid must be'):
        PartConcentrationLoss(grid=(4,))


@pytest.mark.parametrize('mode', ['image', 'text'])
def test_cmr_single_modality_commonality_is_relative_to_the_batch(mode):
    # Part 0: ids 0 and 1 alike in the chosen modality, id 2 apart; the other
    # modality is random and must not matter.
    torch.manual_seed(0)
    a, b, c = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.9, 0.1, 0.0]), None
    c = torch.tensor([0.0, 0.0, 1.0])
    chosen = F.normalize(torch.stack([a, b, c]), dim=-1).unsqueeze(0)  # (1, 3, 3)
    noise = F.normalize(torch.randn(1, 3, 3), dim=-1)
    labels = torch.tensor([0, 1, 2])
    loss = _cmr(commonality=mode)
    image, text = (chosen, noise) if mode == 'image' else (noise, chosen)
    common = loss.part_commonality(image, text, labels)[0]
    assert common.shape == (3, 3)
    sim = chosen[0] @ chosen[0].T
    base = sim[~torch.eye(3, dtype=torch.bool)].mean()
    expected = ((sim - base) / (1 - base)).clamp(0, 1)
    torch.testing.assert_close(common, expected)
    assert common[0, 1] > 0.5 and common[0, 2] == 0 and common[1, 2] == 0
    # Margins shrink for the pair that shares the part.
    margins = loss.part_margins(image, text, labels)[0]
    assert margins[0, 1] < margins[0, 2]


def test_sdm_on_part_embeddings_is_the_mean_of_per_part_losses():
    torch.manual_seed(0)
    img, txt = torch.randn(6, 3, 8), torch.randn(6, 3, 8)
    labels = torch.tensor([0, 0, 1, 1, 2, 3])
    parts = SDMLoss(input_key='part_embeds')(img, txt, labels)
    single = SDMLoss()
    expected = sum(single(img[:, k], txt[:, k], labels) for k in range(3)) / 3
    torch.testing.assert_close(parts, expected)
    with pytest.raises(ValueError, match=r'\(B, K, D\)'):
        SDMLoss(input_key='part_embeds')(img[:, 0], txt[:, 0], labels)
