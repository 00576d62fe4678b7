# IRRA's training recipe (Jiang & Ye, CVPR 2023), the reference of CLIP-based
# TBPS: batch 64, Adam lr 1e-5 (weight decay 4e-5; biases x2 lr, no decay),
# x5 lr for the modules that are new on top of CLIP (the part decoder, its
# queries and projections, the ID classifier), 60 epochs, 5 linear warm-up
# epochs from 0.1x then cosine to 0, mixed precision. AmpOptimWrapper needs a
# GPU; on CPU use optim_wrapper=dict(type='OptimWrapper', ...). The cosine
# phase has no `end` / `T_max`: MMEngine ends it at train_cfg.max_epochs when
# the Runner builds it, so `--cfg-options train_cfg.max_epochs=N` moves it.
# Batch size 64 is the loaders' (configs/_base_/datasets/tbps_loaders.py).
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=60, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

new_module = dict(lr_mult=5.0)
optim_wrapper = dict(
    type='AmpOptimWrapper',
    constructor='TBPSOptimWrapperConstructor',  # unmatched custom_keys: error
    loss_scale='dynamic',
    optimizer=dict(type='Adam', lr=1e-5, betas=(0.9, 0.999), weight_decay=4e-5),
    paramwise_cfg=dict(
        bias_lr_mult=2.0,
        bias_decay_mult=0.0,
        custom_keys={
            'head.part_queries': new_module,
            'head.image_token_proj': new_module,
            'head.text_token_proj': new_module,
            'head.decoder': new_module,
            'head.part_norm': new_module,
            'head.part_proj': new_module,
            'losses': new_module,
        },
    ),
)

warmup_epochs = 5
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=0.1,
        by_epoch=True,
        begin=0,
        end=warmup_epochs,
        convert_to_iter_based=True,
    ),
    dict(
        type='CosineAnnealingLR',
        eta_min=0.0,
        by_epoch=True,
        begin=warmup_epochs,  # ends at train_cfg.max_epochs (set by the Runner)
        convert_to_iter_based=True,
    ),
]

# The recipe's lr is for a total batch of 64; `--auto-scale-lr` rescales it.
auto_scale_lr = dict(base_batch_size=64, enable=False)
