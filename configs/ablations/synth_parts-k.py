# Ablation rows "K parts": the quick-start model (configs/tbps_synth.py,
# K = 4) with another number of shared part queries. K is the config variable
# `num_parts` below; set it per run with
#   --cfg-options model.head.num_parts=K
# (benchmarks/ablation.py does so for K in {2, 6, 8}). Everything else, the
# commonality-margin loss included, is the full method, except the spatial
# priors' sizes: the quick start sets one per query for its K = 4 (the
# upper-body query's wider), and here every query gets the narrow one, 0.05
# of the height tall and 0.15 of the width wide, whatever K is.
_base_ = ['../tbps_synth.py']

num_parts = 4
model = dict(head=dict(num_parts=num_parts, image_prior_scales=(0.05, 0.15)))
