# Ablation row "global-only" (issue 7): the quick-start model (configs/tbps_synth.py)
# without part queries. K = 0, no commonality-margin ranking or part diversity
# loss, and the test score is the coarse similarity only (fusion_weight = 0):
# SDM + ID on the coarse embeddings, i.e. the IRRA-like baseline the part
# branch must beat.
_base_ = ['../tbps_synth.py']

model = dict(
    head=dict(num_parts=0),
    losses=dict(cmr=None, div=None),
    fusion_weight=0.0,
)
