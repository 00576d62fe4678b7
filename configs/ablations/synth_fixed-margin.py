# Ablation row "parts + fixed margin": the quick-start model
# (configs/tbps_synth.py) with the part ranking loss at a FIXED margin
# (margin_max for every part and negative): a plain part-level ranking loss,
# so the difference to the full method is the commonality-based margin alone.
_base_ = ['../tbps_synth.py']

model = dict(losses=dict(cmr=dict(margin_mode='fixed')))
