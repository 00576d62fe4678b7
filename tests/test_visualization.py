"""Tests of the ranked-list and part-explanation figures and TBPSVisualizer."""

import numpy as np
import pytest
from PIL import Image

from tbps_mm.registry import VISUALIZERS
from tbps_mm.visualization import (
    TBPSVisualizer,
    attention_heatmap,
    draw_part_explanation,
    draw_ranked_list,
)
from tbps_mm.visualization.ranked_list import (
    CORRECT_COLOR,
    NEUTRAL_COLOR,
    WRONG_COLOR,
)


def person(color, size=(32, 80)):
    img = np.full((size[1], size[0], 3), 240, np.uint8)
    img[10:-10, 8:-8] = color
    return img


def test_ranked_list_borders_and_layout(tmp_path):
    path = tmp_path / 'p.png'
    Image.fromarray(person((0, 0, 255))).save(path)
    images = [person((255, 0, 0)), str(path), Image.fromarray(person((0, 255, 0)))]
    kwargs = dict(thumb_size=(40, 100), border=4, margin=8)
    fig = draw_ranked_list(
        'a short caption',
        images,
        scores=[0.9, 0.5, 0.1],
        correct=[True, False, True],
        **kwargs,
    )
    assert fig.mode == 'RGB'
    assert fig.size[0] == 8 + 3 * (48 + 8)
    pixels = np.asarray(fig)
    # Top-left pixel of each border (cells start at x = 8 + i * 56).
    ys = np.nonzero((pixels[:, 8] == CORRECT_COLOR).all(axis=1))[0]
    assert ys.size > 0
    top = int(ys[0])
    assert tuple(pixels[top + 1, 8]) == CORRECT_COLOR
    assert tuple(pixels[top + 1, 8 + 56]) == WRONG_COLOR
    assert tuple(pixels[top + 1, 8 + 112]) == CORRECT_COLOR
    # The thumbnail sits inside the border: the blue person is in cell 2.
    cell = pixels[top + 4 : top + 104, 8 + 56 + 4 : 8 + 56 + 44]
    assert (cell == (0, 0, 255)).all(axis=2).any()

    # Without correctness (free search), borders are neutral.
    plain = np.asarray(draw_ranked_list('q', images, **kwargs))
    assert tuple(plain[top + 1, 8]) != CORRECT_COLOR
    assert (plain == NEUTRAL_COLOR).all(axis=2).any()

    # A long caption wraps onto more lines: the figure grows, not widens.
    long = draw_ranked_list('a person ' * 40, images, **kwargs)
    assert long.size[0] == fig.size[0] and long.size[1] > fig.size[1]


def test_ranked_list_errors(tmp_path):
    img = person((1, 2, 3))
    with pytest.raises(ValueError, match='at least one image'):
        draw_ranked_list('q', [])
    with pytest.raises(ValueError, match='2 images but 1 scores'):
        draw_ranked_list('q', [img, img], scores=[0.1])
    with pytest.raises(ValueError, match='2 images but 3 correct'):
        draw_ranked_list('q', [img, img], correct=[True, False, True])
    with pytest.raises(FileNotFoundError, match='missing.jpg'):
        draw_ranked_list('q', [str(tmp_path / 'missing.jpg')])
    bad = tmp_path / 'bad.jpg'
    bad.write_bytes(b'junk')
    with pytest.raises(ValueError, match='bad.jpg'):
        draw_ranked_list('q', [str(bad)])


def test_attention_heatmap_marks_the_attended_region():
    image = Image.fromarray(np.full((96, 32, 3), 128, np.uint8))
    attn = np.zeros((6, 2), np.float32)
    attn[0, :] = 1.0  # the top row of patches
    overlay = np.asarray(attention_heatmap(image, attn)).astype(int)
    top, bottom = overlay[:8].mean(axis=(0, 1)), overlay[-8:].mean(axis=(0, 1))
    # JET: hot = red, cold = blue.
    assert top[0] > top[2] and bottom[2] > bottom[0]
    uniform = np.asarray(attention_heatmap(image, np.ones((6, 2))))
    assert uniform.shape == (96, 32, 3)


def test_part_explanation_layout_and_errors():
    words = ['a', 'woman', 'in', 'a', 'red', 'coat']
    weights = np.zeros((3, 6), np.float32)
    weights[0, 4], weights[1, 5], weights[2, 1] = 0.7, 0.6, 0.5
    attn = np.random.default_rng(0).random((3, 12))
    kwargs = dict(thumb_size=(40, 100), margin=8)
    fig = draw_part_explanation(
        'a woman in a red coat',
        person((200, 0, 0)),
        attn,
        words,
        weights,
        attn_hw=(6, 2),
        part_names=['upper', 'lower', 'head'],
        **kwargs,
    )
    assert fig.size[0] == 8 + 4 * (40 + 8)  # the image and 3 parts
    fig_k3hw = draw_part_explanation(
        'a woman in a red coat',
        person((200, 0, 0)),
        attn.reshape(3, 6, 2),
        words,
        weights,
        **kwargs,
    )
    assert fig_k3hw.size == fig.size
    with pytest.raises(ValueError, match='attn_hw'):
        draw_part_explanation('q', person((0, 0, 0)), attn, words, weights)
    with pytest.raises(ValueError, match='word_weights'):
        draw_part_explanation(
            'q', person((0, 0, 0)), attn, words[:4], weights, attn_hw=(6, 2)
        )
    with pytest.raises(ValueError, match='part_names'):
        draw_part_explanation(
            'q',
            person((0, 0, 0)),
            attn,
            words,
            weights,
            attn_hw=(6, 2),
            part_names=['x'],
        )


def test_visualizer_saves_through_backends(tmp_path):
    visualizer = VISUALIZERS.build(
        dict(
            type='TBPSVisualizer',
            name='tbps_vis_test',
            vis_backends=[dict(type='LocalVisBackend')],
            save_dir=str(tmp_path / 'vis'),
        )
    )
    assert isinstance(visualizer, TBPSVisualizer)
    images = [person((255, 0, 0)), person((0, 255, 0))]
    array = visualizer.add_ranked_list(
        'query_0', 'a caption', images, scores=[0.5, 0.4], correct=[True, False]
    )
    saved = list((tmp_path / 'vis').rglob('query_0*.png'))
    assert len(saved) == 1
    assert np.asarray(Image.open(saved[0])).shape == array.shape
    out = tmp_path / 'explain.png'
    visualizer.add_part_explanation(
        'explain',
        'a red coat',
        images[0],
        np.random.default_rng(1).random((2, 6, 2)),
        ['a', 'red', 'coat'],
        np.ones((2, 3)),
        out_file=str(out),
    )
    assert out.is_file()
