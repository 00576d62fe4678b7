"""Registries: tbps_mm builds its own and MMPretrain's components, and other
scopes build tbps_mm's (the docs/reuse.md example)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def docs_reuse_config() -> str:
    """The cross-scope config shown in docs/reuse.md (first python block)."""
    text = (ROOT / 'docs' / 'reuse.md').read_text()
    section = text.split('## 2.')[1]
    return re.findall(r'```python\n(.*?)```', section, flags=re.S)[0]


def test_import_registers_and_builds_by_plain_and_prefixed_names():
    import tbps_mm  # noqa: F401
    from tbps_mm.registry import DATASETS, METRICS, MODELS, RUNNERS, TRANSFORMS

    loss = MODELS.build(dict(type='SDMLoss'))
    assert type(loss).__name__ == 'SDMLoss'
    assert MODELS.get('PartQueryDecoderHead') is not None
    assert DATASETS.get('CUHKPEDES') is not None
    assert TRANSFORMS.get('TokenizeCaption') is not None
    assert METRICS.get('TBPSRetrievalMetric') is not None
    assert RUNNERS.get('TBPSRunner') is not None
    # MMPretrain / MMCV components resolve through the parent registries.
    assert MODELS.get('VisionTransformer') is MODELS.get('mmpretrain.VisionTransformer')
    assert TRANSFORMS.get('LoadImageFromFile') is not None
    assert TRANSFORMS.get('mmpretrain.RandomErasing') is not None


def test_every_mmpretrain_registry_has_a_tbps_child():
    from mmengine.registry import Registry
    from mmpretrain import registry as mmpretrain_registry

    from tbps_mm import registry

    for name in dir(mmpretrain_registry):
        parent = getattr(mmpretrain_registry, name)
        if not isinstance(parent, Registry) or name.startswith('MMENGINE'):
            continue
        child = getattr(registry, name)
        assert child.parent is parent and child.scope == 'tbps_mm', name


def test_docs_cross_scope_example_builds_tbps_components(tmp_path):
    """Run in a fresh interpreter, so that custom_imports does the import."""
    cfg_file = tmp_path / 'my_config.py'
    cfg_file.write_text(docs_reuse_config())
    script = f"""
import sys
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmpretrain.registry import MODELS
assert 'tbps_mm' not in sys.modules
cfg = Config.fromfile({str(cfg_file)!r})
assert 'tbps_mm' in sys.modules
with DefaultScope.overwrite_default_scope('mmpretrain'):
    loss = MODELS.build(cfg.part_loss)
    head = MODELS.build(cfg.part_head)
print(type(loss).__module__, type(head).__module__, head.num_parts)
"""
    out = subprocess.run(
        [sys.executable, '-c', script],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    loss_mod, head_mod, num_parts = out.stdout.split()
    assert loss_mod.startswith('tbps_mm.models.losses')
    assert head_mod.startswith('tbps_mm.models.heads')
    assert num_parts == '4'


def test_unknown_type_is_a_clear_error():
    from tbps_mm.registry import MODELS

    with pytest.raises(KeyError, match='NoSuchLoss'):
        MODELS.build(dict(type='NoSuchLoss'))


def test_built_loss_runs():
    from tbps_mm.registry import MODELS

    loss = MODELS.build(dict(type='CommonalityMarginRankingLoss'))
    value = loss(torch.randn(4, 2, 8), torch.randn(4, 2, 8), torch.tensor([0, 0, 1, 2]))
    assert value.ndim == 0 and torch.isfinite(value)
