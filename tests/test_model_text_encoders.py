"""Text encoders: from config and from a local folder; pooling; clear errors."""

import pytest
import torch
from transformers import BertConfig, BertModel, CLIPTextConfig, CLIPTextModel

from tbps_mm.models.text_encoders import BertTextEncoder, CLIPTextEncoder, HFTextEncoder
from tbps_mm.registry import MODELS

BERT = dict(
    vocab_size=40,
    hidden_size=32,
    num_hidden_layers=1,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=16,
)
CLIP = dict(
    vocab_size=40,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=1,
    num_attention_heads=4,
    max_position_embeddings=16,
    bos_token_id=38,
    eos_token_id=39,
    pad_token_id=0,
)
IDS = torch.tensor([[2, 7, 9, 3, 0, 0], [2, 5, 3, 0, 0, 0]])
MASK = (IDS > 0).long()


def test_bert_from_config_pools_cls():
    enc = MODELS.build(dict(type='BertTextEncoder', config=BERT))
    out = enc(IDS, MASK)
    assert out['tokens'].shape == (2, 6, 32) and out['pooled'].shape == (2, 32)
    torch.testing.assert_close(out['pooled'], out['tokens'][:, 0])
    assert out['mask'] is MASK and enc.embed_dims == 32
    # No unused pooler (it would break DDP without find_unused_parameters).
    assert not any('pooler' in n for n, _ in enc.named_parameters())


def test_clip_from_config_pools_the_eot_token():
    enc = CLIPTextEncoder(config=CLIP)
    ids = torch.tensor([[38, 5, 6, 39, 0, 0], [38, 5, 6, 7, 8, 9]])  # 2nd: truncated
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    out = enc(ids, mask)
    torch.testing.assert_close(out['pooled'][0], out['tokens'][0, 3])
    torch.testing.assert_close(out['pooled'][1], out['tokens'][1, 5])


def test_generic_encoder_mean_pooling():
    enc = HFTextEncoder(config=BERT, model_type='bert', pooling='mean')
    out = enc(IDS, MASK)
    torch.testing.assert_close(out['pooled'][1], out['tokens'][1, :3].mean(0))


@pytest.mark.parametrize(
    'encoder, hf_model',
    [
        (
            BertTextEncoder,
            lambda: BertModel(BertConfig(**BERT), add_pooling_layer=False),
        ),
        (CLIPTextEncoder, lambda: CLIPTextModel(CLIPTextConfig(**CLIP))),
    ],
)
def test_from_local_folder_keeps_the_saved_weights(tmp_path, encoder, hf_model):
    torch.manual_seed(0)
    source = hf_model().eval()
    source.save_pretrained(tmp_path / 'model')
    enc = encoder(pretrained=str(tmp_path / 'model')).eval()
    enc.init_weights()  # MMEngine's init must not re-initialise them
    with torch.no_grad():
        expected = source(input_ids=IDS, attention_mask=MASK).last_hidden_state
        torch.testing.assert_close(enc(IDS, MASK)['tokens'], expected)


def test_missing_or_incomplete_folder_is_a_clear_error(tmp_path):
    missing = tmp_path / 'no_such_bert'
    with pytest.raises(FileNotFoundError, match=f'"{missing}" does not exist'):
        BertTextEncoder(pretrained=str(missing))
    empty = tmp_path / 'empty'
    empty.mkdir()
    (empty / 'config.json').write_text('{}')
    with pytest.raises(
        FileNotFoundError, match=r'empty" lacks one of model\.safetensors'
    ):
        CLIPTextEncoder(pretrained=str(empty))
    with pytest.raises(ValueError, match='exactly one of'):
        BertTextEncoder(pretrained=str(empty), config=BERT)
    with pytest.raises(ValueError, match='exactly one of'):
        BertTextEncoder()


def test_inputs_that_do_not_fit_the_model_are_clear_errors():
    enc = BertTextEncoder(config=BERT)
    with pytest.raises(ValueError, match='token id 45 >= .*vocab_size 40'):
        enc(torch.tensor([[2, 45, 3]]), torch.ones(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match='20 tokens long .* 16 positions'):
        enc(torch.ones(1, 20, dtype=torch.long), torch.ones(1, 20, dtype=torch.long))
