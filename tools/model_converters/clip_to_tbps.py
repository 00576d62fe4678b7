"""Convert CLIP weights into the layout tbps_mm's reference CLIP recipe loads.

Usage::

    python tools/model_converters/clip_to_tbps.py SRC OUT_DIR \
        [--vision-heads N] [--text-heads N] [--format pth|safetensors] \
        [--tokenizer DIR] [--trust-checkpoint]

``SRC`` is a local OpenAI-CLIP checkpoint (the ``ViT-B-16.pt`` TorchScript
archive, which runs code when loaded and so needs ``--trust-checkpoint``, or a
plain state dict with the same keys) or a local transformers
CLIP folder (``config.json`` + weights, as written by ``save_pretrained``).
Nothing is downloaded. ``OUT_DIR`` receives:

* ``clip_tbps.pth`` (or ``.safetensors``): a weights-only state dict with the
  image tower in MMPretrain ``VisionTransformer`` layout under
  ``image_encoder.`` and CLIP's visual / text projections as the head's coarse
  projections (``head.image_coarse_proj.weight``,
  ``head.text_coarse_proj.weight``). The config loads it with
  ``init_cfg=dict(type='Pretrained', checkpoint=..., prefix=...)``; the
  position embeddings stay on the source grid (14x14 for ViT-B/16 at 224)
  and MMPretrain interpolates them to the config's image size on load.
* ``text_encoder/``: the text tower as a transformers ``CLIPTextModel``
  folder, plus CLIP's tokenizer (``vocab.json``, ``merges.txt`` and the
  transformers configs), which the reference config tokenizes with. Its
  source, first available of: ``--tokenizer DIR`` (a transformers CLIP
  tokenizer folder), the tokenizer of a transformers source folder, or
  CLIP's BPE merges as ``open-clip-torch`` ships them
  (``open_clip/bpe_simple_vocab_16e6.txt.gz``, OpenAI's file), from which
  the vocabulary is rebuilt as OpenAI's ``SimpleTokenizer`` builds it.
  Captions longer than the context are cut to it with the end-of-text token
  kept, as ``clip.tokenize(truncate=True)`` does; padding is the end-of-text
  id under attention mask 0 (OpenAI pads with id 0; neither is read).
* ``clip_tbps_meta.json``: the architecture found, to check the config.

OpenAI checkpoints do not store the number of attention heads; CLIP's rule
(width // 64) is used unless ``--vision-heads`` / ``--text-heads`` say
otherwise. The key mapping follows MMPretrain's
``openai-clip_to_mmpretrain-clip.py`` and transformers'
``convert_clip_original_pytorch_to_hf.py``.
"""

import argparse
import gzip
import importlib.util
import json
import os
import os.path as osp
import re
import shutil
import sys
import warnings
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor

from tbps_mm.models.checkpoint import (
    TRUST_CHECKPOINT_HELP,
    UnsafeCheckpointError,
    read_weights_file,
    save_weights_file,
)

TOKENIZER_FILES = (
    'tokenizer.json',
    'tokenizer_config.json',
    'special_tokens_map.json',
    'vocab.json',
    'merges.txt',
    'added_tokens.json',
)

# OpenAI residual-block names -> transformers CLIP encoder-layer names.
_OPENAI_BLOCK = (
    ('ln_1', 'layer_norm1'),
    ('ln_2', 'layer_norm2'),
    ('mlp.c_fc', 'mlp.fc1'),
    ('mlp.c_proj', 'mlp.fc2'),
    ('attn.out_proj', 'self_attn.out_proj'),
)
# transformers CLIP encoder-layer names -> MMPretrain ViT layer names.
_HF_TO_MMPRETRAIN_BLOCK = (
    ('layer_norm1', 'ln1'),
    ('layer_norm2', 'ln2'),
    ('mlp.fc1', 'ffn.layers.0.0'),
    ('mlp.fc2', 'ffn.layers.1'),
    ('self_attn.out_proj', 'attn.proj'),
)
# Non-parameter entries of OpenAI's TorchScript archives.
_OPENAI_EXTRAS = ('input_resolution', 'context_length', 'vocab_size')


def _count_blocks(state_dict: Dict[str, Tensor], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r'(\d+)\.')
    found = {int(m.group(1)) for k in state_dict for m in [pattern.match(k)] if m}
    return max(found) + 1 if found else 0


def _openai_block_to_hf(rest: str, value: Tensor, out: dict, hf_prefix: str) -> None:
    """Map one OpenAI residual-block entry (``rest`` after the block index)."""
    if rest.startswith('attn.in_proj_'):
        kind = rest[len('attn.in_proj_') :]  # 'weight' or 'bias'
        for name, chunk in zip(('q', 'k', 'v'), value.chunk(3, dim=0)):
            out[f'{hf_prefix}self_attn.{name}_proj.{kind}'] = chunk.clone()
        return
    for old, new in _OPENAI_BLOCK:
        if rest.startswith(old + '.'):
            out[hf_prefix + new + rest[len(old) :]] = value
            return
    raise KeyError(f'unknown OpenAI-CLIP residual-block entry "{rest}"')


def openai_to_hf(state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """Rename an OpenAI-CLIP (ViT) state dict into transformers' CLIPModel keys.

    Args:
        state_dict (dict): OpenAI keys (``visual.conv1.weight``, ...).

    Returns:
        dict: transformers ``CLIPModel`` keys.
    """
    if 'visual.conv1.weight' not in state_dict:
        raise ValueError(
            'not an OpenAI-CLIP ViT state dict: no "visual.conv1.weight" (ResNet '
            'CLIP towers are not supported; tbps_mm uses MMPretrain ResNets for '
            'those)'
        )
    out = OrderedDict()
    simple = {
        'visual.class_embedding': 'vision_model.embeddings.class_embedding',
        'visual.conv1.weight': 'vision_model.embeddings.patch_embedding.weight',
        'visual.positional_embedding': (
            'vision_model.embeddings.position_embedding.weight'
        ),
        'token_embedding.weight': 'text_model.embeddings.token_embedding.weight',
        'positional_embedding': 'text_model.embeddings.position_embedding.weight',
        'logit_scale': 'logit_scale',
    }
    for key, value in state_dict.items():
        if key in _OPENAI_EXTRAS:
            continue
        if key in simple:
            out[simple[key]] = value
        elif key == 'visual.proj':
            out['visual_projection.weight'] = value.t().contiguous()
        elif key == 'text_projection':
            out['text_projection.weight'] = value.t().contiguous()
        elif key.startswith('visual.ln_pre.'):
            out['vision_model.pre_layrnorm.' + key.split('.')[-1]] = value
        elif key.startswith('visual.ln_post.'):
            out['vision_model.post_layernorm.' + key.split('.')[-1]] = value
        elif key.startswith('ln_final.'):
            out['text_model.final_layer_norm.' + key.split('.')[-1]] = value
        elif key.startswith('visual.transformer.resblocks.'):
            index, rest = key[len('visual.transformer.resblocks.') :].split('.', 1)
            _openai_block_to_hf(
                rest, value, out, f'vision_model.encoder.layers.{index}.'
            )
        elif key.startswith('transformer.resblocks.'):
            index, rest = key[len('transformer.resblocks.') :].split('.', 1)
            _openai_block_to_hf(rest, value, out, f'text_model.encoder.layers.{index}.')
        else:
            raise KeyError(f'unknown OpenAI-CLIP entry "{key}"')
    return out


def openai_configs(
    state_dict: Dict[str, Tensor],
    vision_heads: Optional[int] = None,
    text_heads: Optional[int] = None,
) -> Tuple[dict, dict, int]:
    """Vision / text architecture of an OpenAI-CLIP ViT state dict.

    Returns:
        tuple: vision config kwargs, ``CLIPTextConfig`` kwargs and the joint
        embedding size.
    """
    conv = state_dict['visual.conv1.weight']
    width, patch = conv.shape[0], conv.shape[-1]
    grid = int(round((state_dict['visual.positional_embedding'].shape[0] - 1) ** 0.5))
    vision = dict(
        hidden_size=width,
        intermediate_size=state_dict[
            'visual.transformer.resblocks.0.mlp.c_fc.weight'
        ].shape[0],
        num_hidden_layers=_count_blocks(state_dict, 'visual.transformer.resblocks.'),
        num_attention_heads=vision_heads or width // 64,
        patch_size=patch,
        image_size=grid * patch,
    )
    text_width = state_dict['ln_final.weight'].shape[0]
    vocab_size = state_dict['token_embedding.weight'].shape[0]
    text = dict(
        vocab_size=vocab_size,
        hidden_size=text_width,
        intermediate_size=state_dict['transformer.resblocks.0.mlp.c_fc.weight'].shape[
            0
        ],
        num_hidden_layers=_count_blocks(state_dict, 'transformer.resblocks.'),
        num_attention_heads=text_heads or text_width // 64,
        max_position_embeddings=state_dict['positional_embedding'].shape[0],
        hidden_act='quick_gelu',
        layer_norm_eps=1e-5,
        # CLIP's BPE vocabulary ends with <|startoftext|>, <|endoftext|>.
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        projection_dim=state_dict['text_projection'].shape[1],
    )
    for name, heads, w in (
        ('vision', vision_heads, width),
        ('text', text_heads, text_width),
    ):
        if (heads or w // 64) < 1 or w % (heads or w // 64):
            raise ValueError(
                f"cannot infer the {name} tower's attention heads from width {w}: "
                f'pass --{name}-heads'
            )
    return vision, text, state_dict['text_projection'].shape[1]


def _is_torchscript(path: str) -> bool:
    """Whether ``path`` is a TorchScript archive (a zip with a ``code/`` part)."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any('/code/' in name for name in archive.namelist())


def read_openai(path: str, trust: bool = False) -> Dict[str, Tensor]:
    """Read an OpenAI-CLIP TorchScript archive or plain state dict.

    A plain state dict is read through ``read_weights_file`` (never runs
    code). Loading a TorchScript archive runs the TorchScript it holds, so
    it needs ``trust=True`` (``--trust-checkpoint``), for a file the user
    trusts, such as OpenAI's own ``ViT-B-16.pt``.
    """
    if not _is_torchscript(path):
        state_dict = read_weights_file(path)
        return {
            k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()
        }
    if not trust:
        raise UnsafeCheckpointError(
            f'"{path}" is a TorchScript archive: loading it runs the TorchScript '
            "code it holds. If you trust the file (e.g. OpenAI's own download, "
            'checked against its published SHA-256), pass --trust-checkpoint.'
        )
    with warnings.catch_warnings():
        # OpenAI ships TorchScript archives; torch deprecates reading them.
        warnings.simplefilter('ignore', FutureWarning)
        state_dict = torch.jit.load(path, map_location='cpu').state_dict()
    return {k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()}


def read_hf_folder(folder: str) -> Tuple[Dict[str, Tensor], dict, dict, int]:
    """Read a transformers CLIP folder: state dict, vision / text configs."""
    from transformers import CLIPModel

    from tbps_mm.models.text_encoders import check_pretrained_folder

    check_pretrained_folder(folder, 'clip_to_tbps')
    model = CLIPModel.from_pretrained(
        folder, local_files_only=True, dtype=torch.float32
    )
    vision = model.config.vision_config
    vision_cfg = dict(
        hidden_size=vision.hidden_size,
        intermediate_size=vision.intermediate_size,
        num_hidden_layers=vision.num_hidden_layers,
        num_attention_heads=vision.num_attention_heads,
        patch_size=vision.patch_size,
        image_size=vision.image_size,
        layer_norm_eps=vision.layer_norm_eps,
        hidden_act=vision.hidden_act,
    )
    text_cfg = model.config.text_config.to_dict()
    return model.state_dict(), vision_cfg, text_cfg, model.config.projection_dim


def hf_to_tbps_image(state_dict: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """The image tower and both projections in tbps_mm's retriever layout."""
    out = OrderedDict()
    prefix = 'vision_model.'
    q_k_v: Dict[str, Dict[str, Tensor]] = {}
    for key, value in state_dict.items():
        if key == 'visual_projection.weight':
            out['head.image_coarse_proj.weight'] = value
        elif key == 'text_projection.weight':
            out['head.text_coarse_proj.weight'] = value
        if not key.startswith(prefix):
            continue
        key = key[len(prefix) :]
        if key == 'embeddings.class_embedding':
            out['image_encoder.cls_token'] = value.reshape(1, 1, -1)
        elif key == 'embeddings.patch_embedding.weight':
            out['image_encoder.patch_embed.projection.weight'] = value
        elif key == 'embeddings.position_embedding.weight':
            out['image_encoder.pos_embed'] = value.unsqueeze(0)
        elif key.startswith('pre_layrnorm.'):
            out['image_encoder.pre_norm.' + key.split('.')[-1]] = value
        elif key.startswith('post_layernorm.'):
            out['image_encoder.ln1.' + key.split('.')[-1]] = value
        elif key.startswith('encoder.layers.'):
            index, rest = key[len('encoder.layers.') :].split('.', 1)
            target = f'image_encoder.layers.{index}.'
            match = re.match(r'self_attn\.([qkv])_proj\.(weight|bias)$', rest)
            if match:
                q_k_v.setdefault(target + 'attn.qkv.' + match.group(2), {})[
                    match.group(1)
                ] = value
                continue
            for old, new in _HF_TO_MMPRETRAIN_BLOCK:
                if rest.startswith(old + '.'):
                    out[target + new + rest[len(old) :]] = value
                    break
            else:
                raise KeyError(f'unknown CLIP vision entry "{prefix}{key}"')
        elif key != 'embeddings.position_ids':
            raise KeyError(f'unknown CLIP vision entry "{prefix}{key}"')
    for key, parts in q_k_v.items():
        out[key] = torch.cat([parts['q'], parts['k'], parts['v']], dim=0)
    return out


#: OpenAI's BPE file inside the open-clip-torch package.
OPEN_CLIP_BPE = 'bpe_simple_vocab_16e6.txt.gz'
#: Merges OpenAI's SimpleTokenizer reads from it (lines 1 .. 48894).
NUM_MERGES = 49152 - 256 - 2
CONTEXT_LENGTH = 77


def find_open_clip_bpe() -> Optional[str]:
    """Path of CLIP's BPE merges shipped with open-clip-torch, if installed.

    Returns:
        str | None: ``.../open_clip/bpe_simple_vocab_16e6.txt.gz`` or None.
    """
    spec = importlib.util.find_spec('open_clip')
    if spec is None or not spec.submodule_search_locations:
        return None
    path = osp.join(list(spec.submodule_search_locations)[0], OPEN_CLIP_BPE)
    return path if osp.isfile(path) else None


def _bytes_to_unicode() -> Dict[int, str]:
    """OpenAI CLIP's reversible byte -> printable character table."""
    bs = (
        list(range(ord('!'), ord('~') + 1))
        + list(range(ord('¡'), ord('¬') + 1))
        + list(range(ord('®'), ord('ÿ') + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def write_tokenizer_from_bpe(bpe_path: str, out_dir: str) -> List[str]:
    """Write a transformers ``CLIPTokenizer`` folder from OpenAI's BPE file.

    The vocabulary is built as OpenAI's ``SimpleTokenizer`` builds it: the
    256 byte characters, the same with ``</w>``, one token per merge, then
    ``<|startoftext|>`` and ``<|endoftext|>`` (49,408 tokens).

    Args:
        bpe_path (str): ``bpe_simple_vocab_16e6.txt.gz``.
        out_dir (str): Folder to write into.

    Returns:
        list[str]: The files written.
    """
    from transformers import CLIPTokenizer

    with gzip.open(bpe_path, 'rt', encoding='utf-8') as f:
        lines = f.read().split('\n')[1 : NUM_MERGES + 1]
    merges = [tuple(line.split()) for line in lines]
    if len(merges) != NUM_MERGES or any(len(m) != 2 for m in merges):
        raise ValueError(
            f'"{bpe_path}" is not CLIP\'s BPE file: expected {NUM_MERGES} '
            f'merges of two symbols after its header, got {len(merges)}'
        )
    symbols = list(_bytes_to_unicode().values())
    vocab = symbols + [s + '</w>' for s in symbols] + [''.join(m) for m in merges]
    vocab += ['<|startoftext|>', '<|endoftext|>']
    os.makedirs(out_dir, exist_ok=True)
    raw = osp.join(out_dir, 'vocab.json')
    with open(raw, 'w', encoding='utf-8') as f:
        json.dump({token: i for i, token in enumerate(vocab)}, f, ensure_ascii=False)
    with open(osp.join(out_dir, 'merges.txt'), 'w', encoding='utf-8') as f:
        f.write('#version: 0.2\n' + '\n'.join(' '.join(m) for m in merges) + '\n')
    tokenizer = CLIPTokenizer(
        raw,
        osp.join(out_dir, 'merges.txt'),
        # Padding: <|endoftext|> with attention mask 0 (transformers' CLIP
        # default; OpenAI pads with id 0, which the encoder never reads).
        model_max_length=CONTEXT_LENGTH,
    )
    tokenizer.save_pretrained(out_dir)
    return sorted(os.listdir(out_dir))


def _tokenizer_files(folder: str) -> List[str]:
    """The tokenizer files of ``folder`` when it holds a usable tokenizer."""
    present = [n for n in TOKENIZER_FILES if osp.isfile(osp.join(folder, n))]
    usable = 'tokenizer.json' in present or {'vocab.json', 'merges.txt'} <= set(present)
    return present if usable else []


def resolve_tokenizer(src: str, tokenizer_dir: Optional[str]) -> Tuple[str, str]:
    """Where CLIP's tokenizer comes from: ``(kind, path)``.

    Args:
        src (str): The converter's source (file or transformers folder).
        tokenizer_dir (str, optional): ``--tokenizer DIR``.

    Returns:
        tuple[str, str]: ``('folder', DIR)`` to copy a transformers tokenizer
        folder, or ``('bpe', FILE)`` to build one from CLIP's BPE merges.

    Raises:
        FileNotFoundError: ``--tokenizer`` holds no tokenizer, or no source is
            at hand (the message says what to install or pass).
    """
    if tokenizer_dir is not None:
        if not osp.isdir(tokenizer_dir) or not _tokenizer_files(tokenizer_dir):
            raise FileNotFoundError(
                f'--tokenizer "{tokenizer_dir}" is not a transformers CLIP '
                'tokenizer folder (it needs tokenizer.json, or vocab.json and '
                'merges.txt)'
            )
        return 'folder', tokenizer_dir
    if osp.isdir(src) and _tokenizer_files(src):
        return 'folder', src
    bpe = find_open_clip_bpe()
    if bpe is None:
        raise FileNotFoundError(
            f'no CLIP tokenizer for "{src}": it holds none, and CLIP\'s BPE '
            f'vocabulary ({OPEN_CLIP_BPE}) comes with open-clip-torch, which is '
            'not installed. Run `pip install open-clip-torch`, or pass '
            '--tokenizer DIR (a transformers CLIP tokenizer folder).'
        )
    return 'bpe', bpe


def convert(
    src: str,
    out_dir: str,
    vision_heads: Optional[int] = None,
    text_heads: Optional[int] = None,
    fmt: str = 'pth',
    tokenizer_dir: Optional[str] = None,
    trust: bool = False,
) -> dict:
    """Convert ``src`` into ``out_dir`` (see the module doc); return the meta.

    ``trust`` allows a TorchScript archive (see :func:`read_openai`).
    """
    from transformers import CLIPTextConfig, CLIPTextModel

    if not osp.exists(src):
        raise FileNotFoundError(f'CLIP source "{src}" does not exist')
    tokenizer_kind, tokenizer_src = resolve_tokenizer(src, tokenizer_dir)

    if osp.isdir(src):
        hf_state, vision_cfg, text_cfg, embed_dims = read_hf_folder(src)
        source_kind = 'transformers'
    elif osp.isfile(src):
        openai_state = read_openai(src, trust=trust)
        vision_cfg, text_cfg, embed_dims = openai_configs(
            openai_state, vision_heads, text_heads
        )
        hf_state = openai_to_hf(openai_state)
        source_kind = 'openai'
    else:
        raise FileNotFoundError(f'CLIP source "{src}" does not exist')

    os.makedirs(out_dir, exist_ok=True)
    tbps_state = hf_to_tbps_image(hf_state)
    weights = osp.join(out_dir, f'clip_tbps.{fmt}')
    save_weights_file(tbps_state, weights, fmt=fmt)

    text_dir = osp.join(out_dir, 'text_encoder')
    text_config = CLIPTextConfig.from_dict(text_cfg)
    text_model = CLIPTextModel(text_config)
    # transformers 4 nests the tower under `text_model.`, transformers 5 not.
    keep_prefix = any(k.startswith('text_model.') for k in text_model.state_dict())
    text_state = {
        (k if keep_prefix else k[len('text_model.') :]): v
        for k, v in hf_state.items()
        if k.startswith('text_model.') and not k.endswith('position_ids')
    }
    result = text_model.load_state_dict(text_state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith('position_ids')]
    if missing or result.unexpected_keys:
        raise KeyError(
            f'CLIP text weights do not fit CLIPTextModel: missing {missing}, '
            f'unexpected {result.unexpected_keys}'
        )
    text_model.save_pretrained(text_dir)
    if tokenizer_kind == 'folder':
        copied = _tokenizer_files(tokenizer_src)
        for name in copied:
            shutil.copy(osp.join(tokenizer_src, name), osp.join(text_dir, name))
    else:
        copied = write_tokenizer_from_bpe(tokenizer_src, text_dir)
        copied = [n for n in copied if n in TOKENIZER_FILES]
    _check_tokenizer(text_dir, text_config.vocab_size)

    vision_width = vision_cfg['hidden_size']
    meta = dict(
        source=osp.basename(osp.normpath(src)),
        source_kind=source_kind,
        weights=osp.basename(weights),
        image_encoder=dict(
            type='VisionTransformer',
            arch=dict(
                embed_dims=vision_width,
                num_layers=vision_cfg['num_hidden_layers'],
                num_heads=vision_cfg['num_attention_heads'],
                feedforward_channels=vision_cfg['intermediate_size'],
            ),
            patch_size=vision_cfg['patch_size'],
            pretrain_img_size=vision_cfg['image_size'],
        ),
        text_encoder=dict(
            hidden_size=text_config.hidden_size,
            num_hidden_layers=text_config.num_hidden_layers,
            vocab_size=text_config.vocab_size,
            max_position_embeddings=text_config.max_position_embeddings,
        ),
        head=dict(
            image_in_channels=vision_width,
            text_in_channels=text_config.hidden_size,
            embed_dims=embed_dims,
            coarse_bias=False,
        ),
        tokenizer=dict(
            source=osp.basename(tokenizer_src) if tokenizer_kind == 'bpe' else 'folder',
            files=copied,
        ),
        tokenizer_files=copied,
    )
    with open(osp.join(out_dir, 'clip_tbps_meta.json'), 'w', encoding='utf-8') as f:
        json.dump(meta, f, indent=2)
    return meta


def _check_tokenizer(folder: str, vocab_size: int) -> None:
    """The written tokenizer loads and fits the text tower's vocabulary."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    if len(tokenizer) != vocab_size:
        raise ValueError(
            f'the CLIP tokenizer written to "{folder}" has {len(tokenizer)} '
            f'tokens but the text tower has vocab_size {vocab_size}: pass '
            'the tokenizer of this model with --tokenizer DIR'
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Convert OpenAI-CLIP / transformers CLIP weights for tbps_mm.'
    )
    parser.add_argument('src', help='OpenAI-CLIP .pt file or transformers CLIP folder')
    parser.add_argument('out_dir', help='output folder')
    parser.add_argument(
        '--vision-heads',
        type=int,
        default=None,
        help='attention heads of the image tower (OpenAI sources; default width // 64)',
    )
    parser.add_argument(
        '--text-heads',
        type=int,
        default=None,
        help='attention heads of the text tower (OpenAI sources; default width // 64)',
    )
    parser.add_argument(
        '--format',
        choices=('pth', 'safetensors'),
        default='pth',
        help='image-side weights file format (MMEngine init_cfg reads pth)',
    )
    parser.add_argument(
        '--tokenizer',
        default=None,
        metavar='DIR',
        help='transformers CLIP tokenizer folder to copy (default: the source '
        "folder's, else built from open-clip-torch's copy of CLIP's BPE merges)",
    )
    parser.add_argument(
        '--trust-checkpoint', action='store_true', help=TRUST_CHECKPOINT_HELP
    )
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    try:
        meta = convert(
            args.src,
            args.out_dir,
            args.vision_heads,
            args.text_heads,
            args.format,
            args.tokenizer,
            trust=args.trust_checkpoint,
        )
    except (FileNotFoundError, ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    print(
        f'wrote {osp.join(args.out_dir, meta["weights"])} and '
        f'{osp.join(args.out_dir, "text_encoder")}'
    )
    print('image encoder: ' + json.dumps(meta['image_encoder']))
    print('head: ' + json.dumps(meta['head']))
    print('tokenizer: ' + json.dumps(meta['tokenizer']))
    return 0


if __name__ == '__main__':
    sys.exit(main())
