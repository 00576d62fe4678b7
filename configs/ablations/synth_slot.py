# Ablation row "slot attention": the quick-start model
# (configs/tbps_synth.py) with competitive, slot-style cross-attention in the
# shared part decoder (the softmax runs over the queries, so they split the
# image / caption tokens among themselves) instead of ordinary cross-attention.
_base_ = ['../tbps_synth.py']

model = dict(head=dict(attention='slot'))
