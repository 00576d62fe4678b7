# The data loaders and evaluators every TBPS dataset config shares. A dataset
# config inherits this file and adds the dataset (type, data_root, pipeline);
# it may change a loader's batch_size or num_workers the same way.
# Training loads shuffled (image, caption) pairs; evaluation visits every
# gallery image, then every caption query, in dataset order.
tbps_loader = dict(
    batch_size=64,
    num_workers=2,
    persistent_workers=True,
    collate_fn=dict(type='pseudo_collate'),
)
train_dataloader = dict(
    tbps_loader,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(split='train'),
)
val_dataloader = dict(
    tbps_loader,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(split='val'),
)
test_dataloader = dict(val_dataloader, dataset=dict(split='test'))
val_evaluator = dict(type='TBPSRetrievalMetric')
test_evaluator = val_evaluator
