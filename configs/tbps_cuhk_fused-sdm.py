# Recipe: partq_vit-base-p16_clip-pre_1xb64-amp-cos-60e_cuhk-pedes-384x128_fused-sdm
#
# Variant of configs/tbps_cuhk.py (the reference CLIP recipe on CUHK-PEDES)
# with one change: an SDM loss on the fused embedding (TBPSRetriever's
# `fused_embed`, whose dot product is the test-time score s_coarse + lambda *
# mean_k s_k), beside the coarse SDM. The fused SDM is ours; on SynthPedes it
# carries most of the full method's gain over global-only
# (docs/benchmarks_accuracy.md), on real data it is untested. docs/method.md
# says which comparison to run first.
_base_ = ['tbps_cuhk.py']

model = dict(
    losses=dict(
        sdm_fused=dict(
            type='SDMLoss',
            temperature=0.02,  # the coarse SDM's
            loss_weight=1.0,
            input_key='fused_embed',
        )
    )
)
