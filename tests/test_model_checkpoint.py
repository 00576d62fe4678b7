"""Weights-only checkpoint loading and the shape checks on every load path."""

import copy
import pickle

import pytest
import torch
from mmengine.runner.checkpoint import load_checkpoint
from model_fixtures import captions, tiny_retriever_cfg
from safetensors.torch import save_file

from tbps_mm.models.checkpoint import (
    CheckpointMismatchError,
    UnsafeCheckpointError,
    load_tbps_weights,
)
from tbps_mm.registry import MODELS


def _build(seed=0, **overrides):
    torch.manual_seed(seed)
    return MODELS.build(tiny_retriever_cfg(**overrides)).eval()


@pytest.mark.parametrize('suffix', ['pth', 'safetensors'])
def test_weights_only_round_trip(tmp_path, suffix):
    source, target = _build(0), _build(1)
    path = str(tmp_path / f'model.{suffix}')
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    if suffix == 'safetensors':
        save_file(state, path)
    else:
        torch.save({'state_dict': state}, path)
    assert load_tbps_weights(target, path) == dict(missing_keys=[], unexpected_keys=[])
    ids, mask = captions(2)
    torch.testing.assert_close(
        target.encode_text(ids, mask)['part_embeds'],
        source.encode_text(ids, mask)['part_embeds'],
    )


def test_label_count_mismatch_names_the_classifier(tmp_path):
    path = str(tmp_path / 'model.pth')
    torch.save(_build(losses=dict(id=dict(num_classes=7))).state_dict(), path)
    target = _build()
    with pytest.raises(CheckpointMismatchError) as err:
        load_tbps_weights(target, path)
    message = str(err.value)
    assert path in message
    assert 'losses.id.classifier.weight: (7, 24) vs (5, 24)' in message
    assert 'losses.id.classifier.bias: (7,) vs (5,)' in message
    assert 'num_classes' in message
    # For inference the classifier is irrelevant: skip it.
    load_tbps_weights(target, path, ignore_prefixes=('losses.',))


def test_part_count_and_layer_mismatches_name_the_keys(tmp_path):
    path = str(tmp_path / 'k6.pth')
    torch.save(_build(head=dict(num_parts=6)).state_dict(), path)
    with pytest.raises(
        CheckpointMismatchError, match=r'head\.part_queries: \(6, 32\) vs \(4, 32\)'
    ):
        load_tbps_weights(_build(), path)
    path = str(tmp_path / 'l1.pth')
    torch.save(_build(head=dict(num_layers=1)).state_dict(), path)
    with pytest.raises(
        CheckpointMismatchError,
        match=r'missing from the checkpoint: head\.decoder\.1\.',
    ):
        load_tbps_weights(_build(), path)


def test_mmengine_load_paths_raise_instead_of_a_partial_load(tmp_path):
    path = str(tmp_path / 'model.pth')
    torch.save(
        {'state_dict': _build(losses=dict(id=dict(num_classes=7))).state_dict()}, path
    )
    target = _build()
    # MMEngine's loader (load_from, init_cfg) only logs shape mismatches.
    with pytest.raises(CheckpointMismatchError, match='losses.id.classifier.weight'):
        load_checkpoint(target, path, map_location='cpu')
    with pytest.raises(CheckpointMismatchError, match='losses.id.classifier.weight'):
        target.load_state_dict(torch.load(path, weights_only=True)['state_dict'])
    # A submodule loaded alone (init_cfg with a prefix) is checked too.
    image_path = str(tmp_path / 'image.pth')
    wide = _build(
        image_encoder=dict(
            arch=dict(embed_dims=64, num_layers=2, num_heads=4, feedforward_channels=96)
        ),
        head=dict(image_in_channels=64),
    )
    torch.save({'state_dict': wide.state_dict()}, image_path)
    cfg = tiny_retriever_cfg()
    cfg['image_encoder']['init_cfg'] = dict(
        type='Pretrained', checkpoint=image_path, prefix='image_encoder.'
    )
    model = MODELS.build(cfg)
    with pytest.raises(
        CheckpointMismatchError, match=r'cls_token: \(1, 1, 64\) vs \(1, 1, 48\)'
    ):
        model.init_weights()
    # A fitting checkpoint still loads through MMEngine.
    fit = str(tmp_path / 'fit.pth')
    torch.save({'state_dict': _build(2).state_dict()}, fit)
    load_checkpoint(target, fit, map_location='cpu')
    torch.testing.assert_close(target.head.part_queries, _build(2).head.part_queries)


def test_files_that_are_not_weights_only_are_refused(tmp_path):
    path = str(tmp_path / 'pickled.pth')
    torch.save({'state_dict': _build().state_dict(), 'meta': {'hook': object()}}, path)
    with pytest.raises(UnsafeCheckpointError, match='is refused: it needs object'):
        load_tbps_weights(_build(), path)
    with pytest.raises(FileNotFoundError, match='does not exist'):
        load_tbps_weights(_build(), str(tmp_path / 'missing.pth'))
    torch.save({'a': 1}, str(tmp_path / 'not_a_model.pth'))
    with pytest.raises(CheckpointMismatchError, match='holds no state dict'):
        load_tbps_weights(_build(), str(tmp_path / 'not_a_model.pth'))


def test_checked_model_still_pickles_and_deep_copies(tmp_path):
    model = _build()
    clone = copy.deepcopy(model)
    restored = pickle.loads(pickle.dumps(model))
    bad = _build(losses=dict(id=dict(num_classes=7))).state_dict()
    for target in (clone, restored):
        with pytest.raises(CheckpointMismatchError, match='classifier'):
            target.load_state_dict(bad)
    clone.load_state_dict(_build(3).state_dict())
    torch.testing.assert_close(clone.head.part_queries, _build(3).head.part_queries)
