# The quick start (configs/tbps_synth.py) with the small ViT image encoder of
# partq_vit-small_synth.py (192-d, 4 layers, patch 16: an 8x3 patch grid at
# 128x48) in place of the slim ResNet; data, schedule and losses unchanged.
# Kept to show, and to rerun, why the quick start uses the CNN: from scratch at
# this budget the ViT learns several times more slowly
# (docs/benchmarks_accuracy.md, "Choosing the quick-start model").
_base_ = [
    '../_base_/models/partq_vit-small_synth.py',
    '../_base_/datasets/synthpedes.py',
    '../_base_/schedules/synth_cpu.py',
    '../_base_/default_runtime.py',
]

default_hooks = dict(logger=dict(interval=20))
model = dict(losses=dict(sdm=dict(temperature=0.07, learnable_temperature=True)))
