# Ablation row "global-only": the quick-start model (configs/tbps_synth.py)
# without part queries. K = 0; no commonality-margin ranking, part diversity
# or fused SDM loss (without parts the fused embedding is the coarse one, so it
# would only double the SDM weight); the test score is the coarse similarity
# only (fusion_weight = 0): SDM + ID on the coarse embeddings, i.e. the
# IRRA-like baseline the part branch must beat. This file is the one
# definition of global-only for the SynthPedes model: the analyses and
# benchmarks that compare with it load it.
# Without part queries the finer token grid has no reader: the encoder returns
# its last map only, as a global-only model would be built.
_base_ = ['../tbps_synth.py']

model = dict(
    image_encoder=dict(out_indices=(2,)),
    image_token_maps='last',
    head=dict(
        num_parts=0,
        image_token_channels=None,
        image_pos_embed=None,
        image_spatial_prior=None,
    ),
    losses=dict(cmr=None, div=None, sdm_fused=None),
    fusion_weight=0.0,
)
