"""Caption transforms, ImagePipeline and PackTBPSInputs."""

import pickle

import numpy as np
import pytest
import torch
from fixtures_tbps import make_tiny_tokenizer
from mmpretrain.structures import DataSample
from PIL import Image

import tbps_mm  # noqa: F401
from tbps_mm.datasets.transforms import (
    AugmentCaption,
    ImagePipeline,
    ImageTransformError,
    NormalizeCaption,
    PackTBPSInputs,
    TokenizeCaption,
)
from tbps_mm.registry import TRANSFORMS


@pytest.fixture(scope='module')
def tok_dir(tmp_path_factory):
    return make_tiny_tokenizer(tmp_path_factory.mktemp('tok') / 'tokenizer')


def test_transforms_are_registered():
    for name in (
        'NormalizeCaption',
        'AugmentCaption',
        'TokenizeCaption',
        'ImagePipeline',
        'PackTBPSInputs',
    ):
        assert TRANSFORMS.get(name) is not None, name
    # tbps_mm shadows none of MMPretrain's transforms: CleanCaption stays
    # MMPretrain's (punctuation removal on 'gt_caption'), ours is apart.
    from mmpretrain.datasets.transforms import CleanCaption

    assert TRANSFORMS.get('CleanCaption') is CleanCaption
    assert TRANSFORMS.get('NormalizeCaption') is NormalizeCaption


# ------------------------------------------------------------- NormalizeCaption
def test_normalize_caption_normalises_whitespace_and_case():
    out = NormalizeCaption()(dict(text='  A man\n in \t a RED  coat. '))
    assert out['text'] == 'A man in a RED coat.'
    out = NormalizeCaption(lower_case=True)(dict(text='  A man\n in RED. '))
    assert out['text'] == 'a man in red.'


def test_normalize_caption_unescapes_html_as_clip_does():
    # OpenAI CLIP unescapes twice before tokenizing: '&amp;amp;' -> '&'.
    text = 'a coat &amp; a bag &amp;amp; shoes&nbsp;'
    out = NormalizeCaption(unescape_html=True)(dict(text=text))
    assert out['text'] == 'a coat & a bag & shoes'
    assert NormalizeCaption()(dict(text=text))['text'] == text.strip()


def test_normalize_caption_ignores_items_without_text():
    item = dict(img_path='a.jpg', image_id=1)
    assert NormalizeCaption()(dict(item)) == item


def test_normalize_caption_empty_names_the_sample():
    item = dict(
        text=' \n\t ', img_path='imgs/p1.jpg', image_id=4, caption_idx=1, sample_idx=9
    )
    with pytest.raises(ValueError) as err:
        NormalizeCaption()(item)
    message = str(err.value)
    assert "img_path='imgs/p1.jpg'" in message and 'image_id=4' in message
    assert 'caption 1' in message and 'sample 9' in message


# ----------------------------------------------------------- AugmentCaption
def test_augment_caption_zero_probabilities_is_identity():
    text = 'a man in a red coat'
    assert (
        AugmentCaption(mask_prob=0.0, delete_prob=0.0)(dict(text=text))['text'] == text
    )


def test_augment_caption_keeps_at_least_one_original_word():
    np.random.seed(0)
    words = 'a man in a red coat with black shoes'.split()
    for _ in range(20):
        out = AugmentCaption(mask_prob=0.0, delete_prob=1.0)(dict(text=' '.join(words)))
        assert len(out['text'].split()) == 1 and out['text'] in words
        out = AugmentCaption(mask_prob=1.0, delete_prob=0.0)(dict(text=' '.join(words)))
        kept = [w for w in out['text'].split() if w != '[MASK]']
        assert len(out['text'].split()) == len(words) and len(kept) == 1


def test_augment_caption_rates_follow_the_config():
    np.random.seed(1)
    aug = AugmentCaption(mask_prob=0.3, delete_prob=0.2, mask_token='<m>')
    words = ['w'] * 20000
    out = aug(dict(text=' '.join(words)))['text'].split()
    assert abs(1 - len(out) / len(words) - 0.2) < 0.02  # deleted
    assert abs(out.count('<m>') / len(words) - 0.3) < 0.02  # masked
    # Deterministic for a given NumPy seed (MMEngine seeds each worker).
    np.random.seed(3)
    a = aug(dict(text='a man in a red coat'))['text']
    np.random.seed(3)
    assert aug(dict(text='a man in a red coat'))['text'] == a


def test_augment_caption_rejects_bad_probabilities():
    with pytest.raises(ValueError, match='mask_prob must be in'):
        AugmentCaption(mask_prob=1.5)
    with pytest.raises(ValueError, match='must not exceed 1'):
        AugmentCaption(mask_prob=0.6, delete_prob=0.6)
    assert AugmentCaption()(dict(img_path='x.jpg')) == dict(img_path='x.jpg')


# ---------------------------------------------------------- TokenizeCaption
def test_tokenize_caption_pads_and_masks(tok_dir):
    tok = TRANSFORMS.build(
        dict(type='TokenizeCaption', tokenizer=tok_dir, max_length=12)
    )
    out = tok(dict(text='a man in a red coat'))
    ids, mask = out['text_ids'], out['text_mask']
    assert ids.dtype == mask.dtype == np.int64 and ids.shape == mask.shape == (12,)
    words = tok.tokenizer.convert_ids_to_tokens(ids[mask == 1].tolist())
    assert words == ['[CLS]', 'a', 'man', 'in', 'a', 'red', 'coat', '[SEP]']
    assert mask.tolist() == [1] * 8 + [0] * 4
    assert (ids[mask == 0] == tok.tokenizer.pad_token_id).all()


def test_tokenize_caption_truncates_keeping_special_tokens(tok_dir):
    tok = TokenizeCaption(tok_dir, max_length=6)
    out = tok(dict(text='a man in a red coat with black shoes'))
    words = tok.tokenizer.convert_ids_to_tokens(out['text_ids'].tolist())
    assert words == ['[CLS]', 'a', 'man', 'in', 'a', '[SEP]']
    assert out['text_mask'].tolist() == [1] * 6


def test_tokenize_caption_case_and_mask_token(tok_dir, tmp_path):
    # lower_case=None leaves case to the tokenizer: this one lower-cases itself.
    tok = TokenizeCaption(tok_dir, max_length=10)
    upper = tok(dict(text='A MAN [MASK]'))['text_ids'].tolist()
    assert upper == tok(dict(text='a man [MASK]'))['text_ids'].tolist()
    assert tok.tokenizer.unk_token_id not in upper
    assert tok.tokenizer.mask_token_id in upper
    # A case-sensitive tokenizer: lower_case=True lower-cases the words but
    # keeps special tokens such as AugmentCaption's [MASK].
    cased_dir = make_tiny_tokenizer(tmp_path / 'cased', lowercase=False)
    cased = TokenizeCaption(cased_dir, max_length=10)
    assert cased.tokenizer.unk_token_id in cased(dict(text='A MAN'))['text_ids']
    lowered = TokenizeCaption(cased_dir, max_length=10, lower_case=True)
    ids = lowered(dict(text='A MAN [MASK] Red'))['text_ids']
    words = lowered.tokenizer.convert_ids_to_tokens(ids[:6].tolist())
    assert words == ['[CLS]', 'a', 'man', '[MASK]', 'red', '[SEP]']


def test_tokenize_caption_is_lazy_and_reloads_after_pickling(tok_dir, tmp_path):
    tok = TokenizeCaption(str(tmp_path / 'absent'), max_length=8)  # no error yet
    assert tok(dict(img_path='x.jpg')) == dict(img_path='x.jpg')  # no text: no load
    with pytest.raises(
        FileNotFoundError, match=r'tokenizer folder .*absent.* does not exist'
    ):
        tok(dict(text='a man'))
    loaded = TokenizeCaption(tok_dir, max_length=8)
    first = loaded(dict(text='a man'))['text_ids']
    assert loaded._tokenizer is not None
    clone = pickle.loads(pickle.dumps(loaded))  # what a spawned worker gets
    assert clone._tokenizer is None
    assert clone(dict(text='a man'))['text_ids'].tolist() == first.tolist()


def test_tokenize_caption_folder_without_tokenizer(tmp_path):
    (tmp_path / 'weights.bin').write_bytes(b'\0')
    with pytest.raises(
        FileNotFoundError, match=r'holds no tokenizer files.*weights\.bin'
    ):
        TokenizeCaption(str(tmp_path))(dict(text='a man'))
    bad = tmp_path / 'broken'
    bad.mkdir()
    (bad / 'tokenizer.json').write_text('{not json')
    with pytest.raises(OSError, match=r'cannot load a tokenizer from .*broken'):
        TokenizeCaption(str(bad))(dict(text='a man'))


# ------------------------------------------------------------ ImagePipeline
def _jpeg(path, colour=(10, 200, 30), size=(20, 8)):
    Image.new('RGB', (size[1], size[0]), colour).save(path, 'JPEG')
    return str(path)


def test_image_pipeline_runs_only_on_images(tmp_path):
    pipe = ImagePipeline(
        [dict(type='LoadImageFromFile'), dict(type='Resize', scale=(16, 48))]
    )
    query = dict(text='a man', gt_label=1)
    assert pipe(dict(query)) == query
    out = pipe(dict(img_path=_jpeg(tmp_path / 'a.jpg')))
    assert out['img'].shape == (48, 16, 3) and out['img'].dtype == np.uint8
    assert out['ori_shape'] == (20, 8)


def test_image_pipeline_names_missing_and_unreadable_images(tmp_path):
    pipe = ImagePipeline([dict(type='LoadImageFromFile')])
    missing = str(tmp_path / 'missing.jpg')
    with pytest.raises(FileNotFoundError, match='missing.jpg'):
        pipe(dict(img_path=missing))
    broken = tmp_path / 'broken.jpg'
    broken.write_bytes(b'\xff\xd8 truncated')
    with pytest.raises(
        ImageTransformError, match=r"LoadImageFromFile failed on image '.*broken\.jpg'"
    ):
        pipe(dict(img_path=str(broken)))
    empty = tmp_path / 'empty.jpg'
    empty.write_bytes(b'')
    with pytest.raises(ImageTransformError, match='empty.jpg'):
        pipe(dict(img_path=str(empty)))


# ----------------------------------------------------------- PackTBPSInputs
def test_pack_pair_image_only_and_text_only(tmp_path):
    img = np.arange(4 * 2 * 3, dtype=np.uint8).reshape(4, 2, 3)
    ids, mask = np.arange(6, dtype=np.int64), np.ones(6, np.int64)
    pack = PackTBPSInputs()
    pair = pack(
        dict(
            modality='pair',
            img_path='p.jpg',
            img=img,
            text='a man',
            text_ids=ids,
            text_mask=mask,
            gt_label=2,
            image_id=0,
            person_id=5,
            sample_idx=3,
            img_shape=(4, 2),
        )
    )
    assert pair['inputs']['img'].shape == (3, 4, 2)
    assert pair['inputs']['img'].dtype == torch.uint8
    assert torch.equal(pair['inputs']['img'][1], torch.from_numpy(img[..., 1]))
    assert pair['inputs']['text_ids'].dtype == torch.int64
    sample = pair['data_samples']
    assert isinstance(sample, DataSample) and sample.gt_label.tolist() == [2]
    assert (sample.modality, sample.person_id, sample.sample_idx) == ('pair', 5, 3)
    assert sample.text == 'a man' and sample.img_path == 'p.jpg'

    gallery = pack(dict(modality='image', img_path='g.jpg', img=img, gt_label=1))
    assert (
        gallery['inputs']['text_ids'] is None and gallery['inputs']['text_mask'] is None
    )
    query = pack(
        dict(modality='text', text='a man', text_ids=ids, text_mask=mask, gt_label=1)
    )
    assert query['inputs']['img'] is None
    assert (
        set(query['inputs'])
        == set(gallery['inputs'])
        == {'img', 'text_ids', 'text_mask'}
    )


def test_pack_says_which_transform_is_missing():
    with pytest.raises(KeyError, match='LoadImageFromFile'):
        PackTBPSInputs()(dict(img_path='a.jpg', gt_label=0, sample_idx=1))
    with pytest.raises(KeyError, match='TokenizeCaption'):
        PackTBPSInputs()(dict(text='a man', gt_label=0, sample_idx=1))
