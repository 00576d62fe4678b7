# The CPU quick-start model for SynthPedes (configs/tbps_synth.py): a slim
# ResNet (ResNet-18 blocks, 32 base channels, 3 stages) and a small BERT-style
# text encoder, both randomly initialised, K = 4 shared part queries,
# SDM (coarse and fused) + ID + CMR (4 hardest negatives).
#
# Why a CNN and not the small ViT (configs/ablations/synth_vit.py): from scratch, on
# 4,000 training images and a 15-minute CPU budget, the convolution's locality
# prior learns colours and garments per body region several times faster
# than patch attention (docs/benchmarks_accuracy.md, "Choosing the quick-start
# model"). The pooled feature of the coarse embedding is the third stage's
# 8x3 map; the part queries attend over a finer 16x6 grid of 96 tokens, the
# second stage's map alone (image_token_maps='first'), plus a fixed 2-D sine
# code of each token's position. The third stage's features, upsampled onto
# that grid, carried the upper body into the head query's tokens (their
# receptive field spans most of the crop) and its commonality estimate
# tracked the upper body's sharing as much as the head's; from the second
# stage alone it tracks the head's (docs/benchmarks_accuracy.md,
# "Commonality sanity"). Each query's image attention carries a spatial
# prior: a Gaussian centred on one of K horizontal stripes down the middle
# of the crop, 0.05 of the height tall and 0.15 of the width wide (the
# upper-body query's 0.4, to take in the arms), whose widths are learned
# and whose centres stay on their stripes; within it the query attends by
# content, with its content logits soft-capped so that the prior keeps its
# weight. So, without part labels, the queries settle on body parts
# (docs/method.md, "Head"; measured in docs/benchmarks_accuracy.md, "Part
# localisation"). No diversity loss: with the priors pinned and the content
# capped the queries stay apart without it, and with it they moved apart
# onto the background beside the body (same section). The decoder is one
# lean layer, 64 wide (cross-attention only: no query self-attention, no
# FFN), for its training cost (docs/benchmarks.md).
#
# text_vocab_size must cover the SynthPedes tokenizer (<data_root>/tokenizer,
# 219 tokens, [PAD] = 0); captions must fit in text_max_length tokens. The ID
# loss's num_classes is the dataset's: the top-level config takes it from the
# dataset config (configs/tbps_synth.py).
img_size = (128, 48)  # (H, W) the model is built for: the dataset's img_scale
text_vocab_size = 256
text_max_length = 64
num_parts = 4
embed_dims = 256
image_channels = 128  # the third stage's width: 32 base channels x 4
# The part queries' tokens: the second stage's map (64 channels, stride 8; 16x6
# at 128x48).
image_token_channels = 64

model = dict(
    type='TBPSRetriever',
    data_preprocessor=dict(type='TBPSDataPreprocessor'),
    image_encoder=dict(
        type='mmpretrain.ResNet',
        depth=18,
        stem_channels=32,
        base_channels=32,
        num_stages=3,
        strides=(1, 2, 2),  # with the stem's /4: 16x6 and 8x3 maps at 128x48
        dilations=(1, 1, 1),
        out_indices=(1, 2),
        # PyTorch's default initialisation instead of MMPretrain's (Kaiming
        # normal convolutions, the last BN of each residual block at zero,
        # applied when the Runner calls init_weights): from scratch at this
        # budget the default learns much faster (docs/benchmarks_accuracy.md,
        # "Initialisation").
        zero_init_residual=False,
        init_cfg=[],
    ),
    image_token_maps='first',
    channels_last=True,  # faster convolutions on CPU
    text_encoder=dict(
        type='BertTextEncoder',
        pooling='mean',
        config=dict(
            vocab_size=text_vocab_size,
            hidden_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=512,
            max_position_embeddings=text_max_length,
            pad_token_id=0,
            # No dropout: at this budget the model underfits.
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
        ),
    ),
    head=dict(
        type='PartQueryDecoderHead',
        image_in_channels=image_channels,
        text_in_channels=128,
        embed_dims=embed_dims,
        num_parts=num_parts,
        # 64 wide rather than 128: the head's per-token work halves
        # (docs/benchmarks.md, training cost), at equal val R@1 and part
        # localisation (docs/benchmarks_accuracy.md, "Part localisation").
        decoder_dims=64,
        num_layers=1,
        num_heads=4,
        self_attention=False,
        feedforward_ratio=0,
        image_token_channels=image_token_channels,
        image_pos_embed='sine',
        # Stripe priors (ours): chosen on the val split among learned and
        # pinned centres, widths and loss weights
        # (docs/benchmarks_accuracy.md, "Part localisation").
        image_spatial_prior='gaussian',
        # One (y, x) pair per query, top stripe first. 0.05 of the height
        # rather than 0.1: the head and feet queries stay on their small
        # parts instead of sliding onto the neighbouring garment (val, two
        # seeds). The upper-body query's prior is 0.4 of the width wide
        # rather than 0.15, so that it takes in the arms, where sleeves
        # show: the upper query read them in one val seed of six, and in
        # none of ten probes with the narrow prior; the head and feet gains
        # of this design come with the stage-2 tokens
        # (docs/benchmarks_accuracy.md, "Commonality sanity"). A config
        # with another K sets its own pairs.
        image_prior_scales=((0.05, 0.15), (0.05, 0.4), (0.05, 0.15), (0.05, 0.15)),
        image_prior_learn_centres=False,
        # Content logits soft-capped at 2 nats (cap * tanh(logits / cap)):
        # uncapped, they grew past the prior and queries attended far off
        # their stripes (docs/benchmarks_accuracy.md, "Part localisation").
        attn_logit_cap=2.0,
        attention='cross',
        coarse_bias=True,
        # From scratch, a per-modality BN neck keeps the coarse embeddings
        # from collapsing onto one vector early in training.
        embed_norm='bn',
    ),
    losses=dict(
        # A learnable temperature, CLIP-style from 0.07: IRRA's fixed 0.02 is
        # tuned for CLIP-initialised encoders and starves a random model of
        # gradient from all but its hardest pairs.
        sdm=dict(type='SDMLoss', temperature=0.07, learnable_temperature=True),
        id=dict(type='IDLoss', in_channels=embed_dims),
        # Averaged over every negative, the hinge is met for nearly all of
        # them within a few hundred steps (loss ~0.015) and the part branch
        # stops learning; the 4 hardest negatives per anchor keep it working.
        cmr=dict(type='CommonalityMarginRankingLoss', negatives=4),
        # SDM on the fused embedding (TBPSRetriever.fused_embed): trains the
        # score the test ranks by, s_coarse + lambda * mean_k s_k, so the
        # parts learn what the coarse embedding misses. Without it the two
        # branches make the same mistakes and fusing them adds nothing
        # (docs/benchmarks_accuracy.md, "Why the parts did not pay off").
        sdm_fused=dict(
            type='SDMLoss',
            temperature=0.07,
            learnable_temperature=True,
            input_key='fused_embed',
        ),
    ),
    fusion_weight=1.0,
)
