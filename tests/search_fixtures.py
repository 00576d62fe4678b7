"""A tiny search model that finds the right person, and its gallery.

The browser, API and onnxruntime-backend tests need a model whose first
result for a person's caption is that person's image; an untrained tiny
model ranks at random. This module draws SynthPedes-like pedestrians (a
head, a top and trousers in named colours over a plain background, each
image with its own pose shift and noise), writes a tiny ViT + BERT config
over the fixtures' word tokenizer, and trains that model for a few dozen
steps on the gallery's own image-caption pairs with the SDM loss on the
fused embedding until every caption ranks its person first. Training is
seeded and deterministic on CPU.

Example:
    >>> people = make_people(tmp_path / 'gallery')
    >>> setup = build_search_model(tmp_path, people)
    >>> TBPSInferencer(setup['config'], setup['checkpoint'])
"""

from pathlib import Path
from typing import Dict, List

import numpy as np
import torch
from fixtures_tbps import CAPTION_WORDS, COLOURS, GARMENTS, make_tiny_tokenizer
from PIL import Image, ImageDraw

__all__ = [
    'make_people',
    'build_search_model',
    'write_search_model',
    'SEARCH_CONFIG',
    'RGB',
]

#: The colour words' RGB values.
RGB = {
    'red': (210, 30, 30),
    'blue': (30, 60, 210),
    'green': (30, 160, 50),
    'black': (15, 15, 15),
    'white': (240, 240, 240),
    'yellow': (235, 215, 40),
    'grey': (128, 128, 128),
    'pink': (240, 140, 190),
}

SEARCH_CONFIG = """
tokenizer = {tokenizer!r}
model = dict(
    type='TBPSRetriever',
    image_encoder=dict(
        type='VisionTransformer',
        arch=dict(embed_dims=32, num_layers=1, num_heads=2, feedforward_channels=64),
        img_size=(96, 32), patch_size=16, out_type='raw'),
    image_pooling='mean',
    text_encoder=dict(
        type='BertTextEncoder', pooling='mean',
        config=dict(vocab_size={vocab}, hidden_size=32, num_hidden_layers=1,
                    num_attention_heads=4, intermediate_size=64,
                    max_position_embeddings=16, pad_token_id=0,
                    hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)),
    head=dict(type='PartQueryDecoderHead', image_in_channels=32,
              text_in_channels=32, embed_dims=32, num_parts=3,
              decoder_dims=32, num_heads=4),
    losses=dict(sdm=dict(type='SDMLoss', temperature=0.05,
                         input_key='fused_embed')),
    fusion_weight=1.0)
test_pipeline = [
    dict(type='ImagePipeline', transforms=[
        dict(type='LoadImageFromFile'), dict(type='Resize', scale=(32, 96))]),
    dict(type='NormalizeCaption'),
    dict(type='TokenizeCaption', tokenizer=tokenizer, max_length=16),
    dict(type='PackTBPSInputs'),
]
test_dataloader = dict(dataset=dict(type='SynthPedes', pipeline=test_pipeline))
"""


def _caption(who: str, top: str, garment: str, bottom: str, variant: int) -> str:
    if variant == 0:
        return f'a {who} in a {top} {garment} and {bottom} pants .'
    return f'a {who} wearing {bottom} pants with a {top} {garment} .'


def make_people(
    folder: Path, num_people: int = 8, images_per_person: int = 2, seed: int = 0
) -> List[Dict]:
    """Draw ``num_people`` pedestrians with distinct clothes, a few images each.

    Args:
        folder (Path): Where the PNGs go (created), ``person_<p>_<k>.png``.
        num_people (int): People (at most 8 x 7 colour pairs). Defaults to 8.
        images_per_person (int): Images per person. Defaults to 2.
        seed (int): Seed of the pose shifts and noise. Defaults to 0.

    Returns:
        list[dict]: One per image: ``path``, ``pid`` and ``captions`` (two
        phrasings of the same description).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    records = []
    for pid in range(num_people):
        top = COLOURS[pid % len(COLOURS)]
        bottom = COLOURS[(pid * 3 + 1 + pid // len(COLOURS)) % len(COLOURS)]
        if bottom == top:
            bottom = COLOURS[(COLOURS.index(top) + 1) % len(COLOURS)]
        garment = GARMENTS[pid % len(GARMENTS)]
        who = 'man' if pid % 2 else 'woman'
        for k in range(images_per_person):
            image = Image.new('RGB', (32, 96), (150, 120, 90))
            draw = ImageDraw.Draw(image)
            dx, dy = (int(v) for v in rng.integers(-2, 3, size=2))
            draw.ellipse((11 + dx, 4 + dy, 21 + dx, 16 + dy), fill=(225, 185, 150))
            draw.rectangle((7 + dx, 17 + dy, 25 + dx, 50 + dy), fill=RGB[top])
            draw.rectangle((9 + dx, 51 + dy, 23 + dx, 86 + dy), fill=RGB[bottom])
            draw.rectangle((8 + dx, 87 + dy, 24 + dx, 91 + dy), fill=(20, 20, 20))
            noise = rng.normal(0, 6, (96, 32, 3))
            array = np.clip(np.asarray(image, dtype=np.float64) + noise, 0, 255)
            path = folder / f'person_{pid}_{k}.png'
            Image.fromarray(array.astype(np.uint8)).save(path)
            records.append(
                dict(
                    path=str(path),
                    pid=pid,
                    captions=[_caption(who, top, garment, bottom, v) for v in (0, 1)],
                )
            )
    return records


def write_search_model(root: Path) -> Dict:
    """Write the config and an untrained (seeded) model's weights.

    For tests of the plumbing, where what the model ranks does not matter.

    Args:
        root (Path): Folder for the tokenizer, config and checkpoint.

    Returns:
        dict: ``config`` and ``checkpoint`` (weights-only ``.pth``) paths and
        ``state`` (the state dict saved).
    """
    from mmengine.config import Config

    from tbps_mm.registry import MODELS

    root = Path(root)
    tokenizer = make_tiny_tokenizer(root / 'tokenizer')
    config = root / 'search_tiny.py'
    config.write_text(
        SEARCH_CONFIG.format(tokenizer=tokenizer, vocab=len(CAPTION_WORDS) + 5)
    )
    torch.manual_seed(0)
    state = MODELS.build(Config.fromfile(str(config)).model).state_dict()
    checkpoint = root / 'search_untrained.pth'
    torch.save(state, checkpoint)
    return dict(config=str(config), checkpoint=str(checkpoint), state=state)


def build_search_model(
    root: Path, people: List[Dict], max_steps: int = 200, lr: float = 3e-3
) -> Dict:
    """Write the config, train the tiny model on ``people``, save it.

    Args:
        root (Path): Folder for the tokenizer, config and checkpoint.
        people (list[dict]): ``make_people``'s records.
        max_steps (int): Most optimiser steps; training stops at the first
            check (every 10 steps) where every caption ranks its person
            first. Defaults to 200.
        lr (float): AdamW learning rate. Defaults to 3e-3.

    Returns:
        dict: ``config`` and ``checkpoint`` (weights-only ``.pth``) paths.

    Raises:
        AssertionError: Training did not make every caption rank its person
            first (the tests that use the model rely on it).
    """
    from mmengine.config import Config
    from mmengine.dataset import pseudo_collate
    from mmpretrain.structures import DataSample

    from tbps_mm.registry import MODELS, TRANSFORMS

    root = Path(root)
    tokenizer = make_tiny_tokenizer(root / 'tokenizer')
    config = root / 'search_tiny.py'
    config.write_text(
        SEARCH_CONFIG.format(tokenizer=tokenizer, vocab=len(CAPTION_WORDS) + 5)
    )
    cfg = Config.fromfile(str(config))
    pipeline = [TRANSFORMS.build(t) for t in cfg.test_pipeline]

    def prepare(item):
        for transform in pipeline:
            item = transform(item)
        return item

    items, labels = [], []
    for record in people:
        for caption in record['captions']:
            item = dict(img_path=record['path'], text=caption, sample_idx=len(items))
            items.append(prepare(item))
            labels.append(record['pid'])
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    batch = model.data_preprocessor(pseudo_collate(items), True)
    samples = [DataSample().set_gt_label(label) for label in labels]
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)

    def ranked_pids() -> List[int]:
        model.eval()
        with torch.no_grad():
            inputs = batch['inputs']
            image = model.encode_image(inputs['images'])
            text = model.encode_text(inputs['text_ids'], inputs['text_mask'])
            best = model.similarity(text, image).argmax(dim=1)
        model.train()
        return [labels[i] for i in best.tolist()]

    found = None
    for step in range(1, max_steps + 1):
        loss = sum(model.loss(batch['inputs'], samples).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 10 == 0:
            found = ranked_pids()
            if found == labels:
                break
    model.eval()
    assert found == labels, f'the tiny search model ranks {found}, wanted {labels}'
    checkpoint = root / 'search_tiny.pth'
    torch.save(
        {k: v for k, v in model.state_dict().items() if not k.startswith('losses.')},
        checkpoint,
    )
    return dict(config=str(config), checkpoint=str(checkpoint))
