# The CPU quick-start model for SynthPedes (configs/tbps_synth.py): a small ViT
# and a small BERT-style text encoder, both randomly initialised, K = 4 shared
# part queries, SDM + ID + CMR. Sized so that a training step at batch 64 on
# 128x48 images stays well under a second on a 2-core CPU.
#
# text_vocab_size must cover the SynthPedes tokenizer (<data_root>/tokenizer,
# 219 tokens, [PAD] = 0); captions must fit in text_max_length tokens.
img_size = (128, 48)
text_vocab_size = 256
text_max_length = 64
num_classes = 1000  # SynthPedes 'small' train identities
num_parts = 4
embed_dims = 256

model = dict(
    type='TBPSRetriever',
    data_preprocessor=dict(type='TBPSDataPreprocessor'),
    image_encoder=dict(
        type='VisionTransformer',
        arch=dict(embed_dims=192, num_layers=4, num_heads=3, feedforward_channels=768),
        img_size=img_size,
        patch_size=16,  # an 8x3 grid of patch tokens
        pre_norm=True,
        final_norm=True,
        out_type='raw',
        drop_path_rate=0.1,
    ),
    # From scratch, the mean patch / token feature (not CLS) and a BN neck keep
    # the coarse embeddings from collapsing early in training.
    image_pooling='mean',
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
        ),
    ),
    head=dict(
        type='PartQueryDecoderHead',
        image_in_channels=192,
        text_in_channels=128,
        embed_dims=embed_dims,
        num_parts=num_parts,
        decoder_dims=128,
        num_layers=2,
        num_heads=4,
        attention='cross',
        coarse_bias=True,
        embed_norm='bn',
    ),
    losses=dict(
        sdm=dict(type='SDMLoss', temperature=0.02),
        id=dict(type='IDLoss', in_channels=embed_dims, num_classes=num_classes),
        cmr=dict(type='CommonalityMarginRankingLoss'),
    ),
    fusion_weight=1.0,
)
