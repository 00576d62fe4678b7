# Recipe: partq_resnet18-w32-s3_bert-small_1xb64-adamw-cos-9e_synthpedes-small-128x48
#
# The embedded default and the README's quick start: the full method (shared
# part queries, SDM + ID + commonality-margin ranking) with a slim ResNet and
# a small BERT-style text encoder trained from scratch on SynthPedes 'small',
# which the dataset generates into data/synthpedes_small on first use.
# Runs on a laptop CPU; validates on the val split at the end of training and,
# with `tools/train.py ... --test`, reports the test split too.
_base_ = [
    '_base_/models/partq_resnet-small_synth.py',
    '_base_/datasets/synthpedes.py',
    '_base_/schedules/synth_cpu.py',
    '_base_/default_runtime.py',
]

default_hooks = dict(logger=dict(interval=20))
# The ID loss has one class per training identity of the dataset.
model = dict(losses=dict(id=dict(num_classes={{_base_.num_classes}})))
