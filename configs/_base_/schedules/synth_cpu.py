# The CPU quick-start schedule (SynthPedes, models trained from scratch):
# AdamW at a from-scratch learning rate (2e-3), a one-epoch linear warm-up, cosine
# decay, gradient clipping, full precision, validation at the end only.
# The cosine phase has no `end` / `T_max`: MMEngine ends it at the train loop's
# max_epochs when the Runner builds it, so `--cfg-options
# train_cfg.max_epochs=N` moves the whole schedule.
max_epochs = 9
# Batch size 64 is the loaders' (configs/_base_/datasets/tbps_loaders.py).
train_cfg = dict(
    type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=max_epochs
)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

optim_wrapper = dict(
    type='OptimWrapper',
    constructor='TBPSOptimWrapperConstructor',  # unmatched custom_keys: error
    optimizer=dict(type='AdamW', lr=2e-3, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0),
    clip_grad=dict(max_norm=5.0),
)

param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=0.01,
        by_epoch=True,
        begin=0,
        end=1,
        convert_to_iter_based=True,
    ),
    dict(
        type='CosineAnnealingLR',
        eta_min=1e-6,
        by_epoch=True,
        begin=1,
        convert_to_iter_based=True,
    ),
]

auto_scale_lr = dict(base_batch_size=64, enable=False)
