# The quick-start model (configs/tbps_synth.py) with a margin warm-up: the part
# ranking loss runs with its fixed margin (margin_max for every part and
# negative) for the first half of training, rounded up (5 of 9 epochs), and
# with the commonality margin afterwards (MarginWarmupHook). The commonality
# estimate is read off the part embeddings, which early in training carry the
# parts' colours only; from the start, it shrinks the margin between two
# parts of one colour and so takes away the gradient that would teach what
# else tells them apart (docs/method.md, "The margin warm-up").
_base_ = ['../tbps_synth.py']

custom_hooks = [dict(type='MarginWarmupHook', fraction=0.5)]
