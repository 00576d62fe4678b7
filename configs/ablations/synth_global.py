# Ablation row "global-only": the quick-start model (configs/tbps_synth.py)
# without part queries. K = 0; no commonality-margin ranking, part diversity
# or fused SDM loss (without parts the fused embedding is the coarse one, so it
# would only double the SDM weight); the test score is the coarse similarity
# only (fusion_weight = 0): SDM + ID on the coarse embeddings, i.e. the
# IRRA-like baseline the part branch must beat. This file is the one
# definition of global-only for the SynthPedes model: the analyses and
# benchmarks that compare with it load it.
_base_ = ['../tbps_synth.py']

model = dict(
    head=dict(num_parts=0),
    losses=dict(cmr=None, div=None, sdm_fused=None),
    fusion_weight=0.0,
)
