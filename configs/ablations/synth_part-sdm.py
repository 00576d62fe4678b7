# The quick-start model (configs/tbps_synth.py) with SDM on each part's
# embeddings on its own (SDMLoss(input_key='part_embeds'), averaged over the K
# parts, weight 0.5): every part must identify the person by itself, so where
# colours are shared, only what else the part shows can tell people apart.
_base_ = ['../tbps_synth.py']

model = dict(
    losses=dict(
        sdm_parts=dict(
            type='SDMLoss',
            temperature=0.07,
            learnable_temperature=True,
            input_key='part_embeds',
            loss_weight=0.5,
        )
    )
)
