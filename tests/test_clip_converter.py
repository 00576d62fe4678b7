"""tools/model_converters/clip_to_tbps.py, verified numerically.

A tiny random CLIP is built with transformers and saved (no download); the
converter turns it (and its OpenAI-layout twin) into tbps_mm weights, which a
TBPSRetriever loads through its config's ``init_cfg`` / ``pretrained``; the
normalised coarse features must equal the source model's. An OpenAI-layout
source (a state dict, or a TorchScript archive as OpenAI ships) gets CLIP's
tokenizer built from open-clip-torch's BPE file, and the reference
pipeline's caption transforms then give OpenCLIP's token ids.
"""

import importlib.util
import os.path as osp
import warnings

import pytest
import torch
import torch.nn.functional as F
from transformers import CLIPConfig, CLIPModel

from tbps_mm.registry import MODELS, TRANSFORMS

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
# CLIP's vocabulary size: the converter writes CLIP's tokenizer and checks
# that it fits the text tower.
VOCAB, EOS, BOS = 49408, 49407, 49406


def _load_converter():
    path = osp.join(REPO, 'tools', 'model_converters', 'clip_to_tbps.py')
    spec = importlib.util.spec_from_file_location('clip_to_tbps', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


converter = _load_converter()


def _tiny_clip() -> CLIPModel:
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=VOCAB,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=16,
            bos_token_id=BOS,
            eos_token_id=EOS,
            pad_token_id=0,
        ),
        vision_config=dict(
            hidden_size=48,
            intermediate_size=96,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=32,
            patch_size=8,
        ),
        projection_dim=24,
    )
    return CLIPModel(config).eval()


def _inverse_block(prefix_hf: str, prefix_oa: str, sd: dict, out: dict) -> None:
    """transformers encoder layer -> OpenAI residual block (test-side mapping)."""
    i = 0
    while f'{prefix_hf}{i}.layer_norm1.weight' in sd:
        hf, oa = f'{prefix_hf}{i}.', f'{prefix_oa}{i}.'
        for kind in ('weight', 'bias'):
            out[f'{oa}attn.in_proj_{kind}'] = torch.cat(
                [sd[f'{hf}self_attn.{n}_proj.{kind}'] for n in 'qkv']
            )
            out[f'{oa}attn.out_proj.{kind}'] = sd[f'{hf}self_attn.out_proj.{kind}']
            out[f'{oa}ln_1.{kind}'] = sd[f'{hf}layer_norm1.{kind}']
            out[f'{oa}ln_2.{kind}'] = sd[f'{hf}layer_norm2.{kind}']
            out[f'{oa}mlp.c_fc.{kind}'] = sd[f'{hf}mlp.fc1.{kind}']
            out[f'{oa}mlp.c_proj.{kind}'] = sd[f'{hf}mlp.fc2.{kind}']
        i += 1


def _hf_to_openai(sd: dict) -> dict:
    v, t = 'vision_model.', 'text_model.'
    out = {
        'visual.class_embedding': sd[v + 'embeddings.class_embedding'],
        'visual.conv1.weight': sd[v + 'embeddings.patch_embedding.weight'],
        'visual.positional_embedding': sd[v + 'embeddings.position_embedding.weight'],
        'visual.proj': sd['visual_projection.weight'].t(),
        'token_embedding.weight': sd[t + 'embeddings.token_embedding.weight'],
        'positional_embedding': sd[t + 'embeddings.position_embedding.weight'],
        'text_projection': sd['text_projection.weight'].t(),
        'logit_scale': sd['logit_scale'],
    }
    for kind in ('weight', 'bias'):
        out[f'visual.ln_pre.{kind}'] = sd[f'{v}pre_layrnorm.{kind}']
        out[f'visual.ln_post.{kind}'] = sd[f'{v}post_layernorm.{kind}']
        out[f'ln_final.{kind}'] = sd[f'{t}final_layer_norm.{kind}']
    _inverse_block(v + 'encoder.layers.', 'visual.transformer.resblocks.', sd, out)
    _inverse_block(t + 'encoder.layers.', 'transformer.resblocks.', sd, out)
    return {k: val.clone() for k, val in out.items()}


def _retriever(out_dir: str, img_size=(32, 32)):
    weights = osp.join(out_dir, 'clip_tbps.pth')
    model = MODELS.build(
        dict(
            type='TBPSRetriever',
            data_preprocessor=dict(type='TBPSDataPreprocessor'),
            image_encoder=dict(
                type='VisionTransformer',
                arch=dict(
                    embed_dims=48, num_layers=2, num_heads=4, feedforward_channels=96
                ),
                img_size=img_size,
                patch_size=8,
                pre_norm=True,
                final_norm=True,
                out_type='raw',
                norm_cfg=dict(type='LN', eps=1e-5),
                layer_cfgs=dict(act_cfg=dict(type='mmpretrain.QuickGELU')),
                init_cfg=dict(
                    type='Pretrained', checkpoint=weights, prefix='image_encoder.'
                ),
            ),
            text_encoder=dict(
                type='CLIPTextEncoder', pretrained=osp.join(out_dir, 'text_encoder')
            ),
            head=dict(
                type='PartQueryDecoderHead',
                image_in_channels=48,
                text_in_channels=32,
                embed_dims=24,
                num_parts=2,
                decoder_dims=16,
                num_heads=2,
                coarse_bias=False,
                init_cfg=dict(type='Pretrained', checkpoint=weights, prefix='head.'),
            ),
        )
    )
    model.init_weights()
    return model.eval()


def _inputs():
    torch.manual_seed(1)
    images = torch.randn(3, 3, 32, 32)
    ids = torch.tensor(
        [
            [BOS, 5, 9, 17, EOS, 0, 0, 0],
            [BOS, 3, EOS, 0, 0, 0, 0, 0],
            [BOS, 40, 41, 42, 43, 44, 45, EOS],
        ]
    )
    return images, ids, (ids > 0).long() | (ids == EOS).long()


def _check_features(clip: CLIPModel, model) -> None:
    images, ids, mask = _inputs()
    with torch.no_grad():
        ref_img = F.normalize(
            clip.get_image_features(pixel_values=images).pooler_output
        )
        ref_txt = F.normalize(
            clip.get_text_features(input_ids=ids, attention_mask=mask).pooler_output
        )
        img = model.encode_image(images)['embed']
        txt = model.encode_text(ids, mask)['embed']
    torch.testing.assert_close(img, ref_img, atol=1e-5, rtol=0)
    torch.testing.assert_close(txt, ref_txt, atol=1e-5, rtol=0)


def test_transformers_folder_matches_source(tmp_path):
    clip = _tiny_clip()
    src = str(tmp_path / 'hf_clip')
    clip.save_pretrained(src)
    (tmp_path / 'hf_clip' / 'tokenizer_config.json').write_text('{}')
    # A tokenizer folder to copy (a bare tokenizer_config.json is no tokenizer).
    tok_dir = tmp_path / 'clip_tokenizer'
    converter.write_tokenizer_from_bpe(converter.find_open_clip_bpe(), str(tok_dir))
    with pytest.raises(FileNotFoundError, match='not a transformers CLIP tokenizer'):
        converter.convert(src, str(tmp_path / 'out'), tokenizer_dir=src)
    meta = converter.convert(src, str(tmp_path / 'out'), tokenizer_dir=str(tok_dir))
    assert meta['head'] == dict(
        image_in_channels=48, text_in_channels=32, embed_dims=24, coarse_bias=False
    )
    assert 'vocab.json' in meta['tokenizer_files']
    assert osp.isfile(tmp_path / 'out' / 'text_encoder' / 'merges.txt')
    # The image side is weights-only (safe to load with torch's default).
    state = torch.load(tmp_path / 'out' / 'clip_tbps.pth', weights_only=True)
    assert state['image_encoder.pos_embed'].shape == (1, 17, 48)
    _check_features(clip, _retriever(str(tmp_path / 'out')))


def test_openai_layout_matches_source(tmp_path):
    clip = _tiny_clip()
    path = str(tmp_path / 'ViT-tiny.pt')
    torch.save(_hf_to_openai(clip.state_dict()), path)
    meta = converter.convert(path, str(tmp_path / 'out'), vision_heads=4, text_heads=4)
    assert meta['image_encoder']['arch'] == dict(
        embed_dims=48, num_layers=2, num_heads=4, feedforward_channels=96
    )
    assert meta['image_encoder']['pretrain_img_size'] == 32
    _check_features(clip, _retriever(str(tmp_path / 'out')))


def test_position_embeddings_resize_to_a_person_crop(tmp_path):
    clip = _tiny_clip()
    src = str(tmp_path / 'hf_clip')
    clip.save_pretrained(src)
    converter.convert(src, str(tmp_path / 'out'), fmt='pth')
    # 4x4 grid at 32x32 -> 6x2 grid at 48x16: MMPretrain interpolates on load.
    model = _retriever(str(tmp_path / 'out'), img_size=(48, 16))
    assert model.image_encoder.pos_embed.shape == (1, 1 + 6 * 2, 48)
    torch.testing.assert_close(
        model.image_encoder.cls_token.flatten(),
        clip.vision_model.embeddings.class_embedding,
    )
    out = model.encode_image(torch.randn(2, 3, 48, 16))
    assert out['attn'].shape == (2, 2, 12) and out['attn_hw'] == (6, 2)


def test_missing_source_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match='does not exist'):
        converter.convert(str(tmp_path / 'nope.pt'), str(tmp_path / 'out'))
    (tmp_path / 'empty').mkdir()
    with pytest.raises(FileNotFoundError, match='lacks config.json'):
        converter.convert(str(tmp_path / 'empty'), str(tmp_path / 'out'))


CAPTIONS = [
    "A woman in a RED coat, carrying a bag; she's wearing black shoes!",
    '  The man  wears\n a white T-shirt and blue jeans (2 pockets).',
    'Café-style naïve jacket, 100% wool &amp; über-long scarf',
    # Longer than CLIP's 77-token context: cut, end-of-text kept.
    ' '.join(['the young man walks with a black backpack and grey trousers'] * 12),
]


def _torchscript_archive(state_dict: dict, path: str) -> None:
    """Save ``state_dict`` as a TorchScript archive, as OpenAI ships CLIP."""
    root = torch.nn.Module()
    for key, value in state_dict.items():
        *path_parts, leaf = key.split('.')
        module = root
        for part in path_parts:
            if not hasattr(module, part):
                module.add_module(part, torch.nn.Module())
            module = getattr(module, part)
        module.register_buffer(leaf, value)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', FutureWarning)
        torch.jit.save(torch.jit.script(root), path)


@pytest.mark.parametrize('archive', [False, True])
def test_openai_checkpoint_tokenizes_as_openai_clip(tmp_path, archive):
    open_clip = pytest.importorskip('open_clip')
    clip = _tiny_clip()
    state = _hf_to_openai(clip.state_dict())
    path = str(tmp_path / 'ViT-tiny.pt')
    if archive:
        state['input_resolution'] = torch.tensor(32)
        _torchscript_archive(state, path)
    else:
        torch.save(state, path)
    out = tmp_path / 'out'
    if archive:  # TorchScript runs code on load: only with trust
        with pytest.raises(converter.UnsafeCheckpointError, match='TorchScript'):
            converter.convert(path, str(out), vision_heads=4, text_heads=4)
    meta = converter.convert(path, str(out), vision_heads=4, text_heads=4, trust=True)
    assert meta['tokenizer']['source'] == 'bpe_simple_vocab_16e6.txt.gz'
    if archive:  # the weights came through the TorchScript reader
        _check_features(clip, _retriever(str(out)))

    # The reference config's caption transforms, pointed at the new folder.
    from mmengine.config import Config

    data_cfg = Config.fromfile(
        osp.join(REPO, 'configs', '_base_', 'datasets', 'real_pedes_384x128.py')
    )
    steps = [
        dict(t, tokenizer=str(out / 'text_encoder'))
        if t['type'] == 'TokenizeCaption'
        else dict(t)
        for t in data_cfg.test_pipeline
        if t['type'] in ('NormalizeCaption', 'TokenizeCaption')
    ]
    assert [t['type'] for t in steps] == ['NormalizeCaption', 'TokenizeCaption']
    transforms = [TRANSFORMS.build(t) for t in steps]
    reference = open_clip.get_tokenizer('ViT-B-16')
    for caption in CAPTIONS:
        item = dict(text=caption)
        for t in transforms:
            item = t(item)
        expected = reference([caption])[0]
        length = int((expected != 0).sum())  # OpenAI pads with id 0
        assert item['text_mask'].tolist() == [1] * length + [0] * (77 - length)
        assert item['text_ids'][:length].tolist() == expected[:length].tolist()
    assert length == 77 and item['text_ids'][76] == EOS


def test_no_tokenizer_source_says_what_to_do(tmp_path, monkeypatch):
    clip = _tiny_clip()
    path = str(tmp_path / 'ViT-tiny.pt')
    torch.save(_hf_to_openai(clip.state_dict()), path)
    monkeypatch.setattr(converter, 'find_open_clip_bpe', lambda: None)
    with pytest.raises(FileNotFoundError, match='pip install open-clip-torch'):
        converter.convert(path, str(tmp_path / 'out'), vision_heads=4, text_heads=4)
    assert not (tmp_path / 'out').exists()  # nothing half-written
