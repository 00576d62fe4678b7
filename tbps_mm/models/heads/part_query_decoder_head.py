"""``PartQueryDecoderHead``: coarse embeddings and shared part queries.

The head turns one modality's encoder output (token features, a pooled
feature, a padding mask) into a coarse embedding and K part embeddings. The
part queries and the decoder layers exist once and serve both modalities, so
the k-th output of an image and the k-th output of a caption come from the
same learned query (the paper's shared decoder); only the input projections
(token features -> decoder width) and the coarse projections (pooled feature
-> embedding) are per modality.

Written by hand: MMPretrain and MMEngine have no cross-modal query decoder.
"""

from typing import Dict, Optional, Tuple

import torch
from mmengine.model import BaseModule
from mmengine.model.weight_init import trunc_normal_
from torch import Tensor, nn

from tbps_mm.registry import MODELS

from .part_query_decoder_layer import ATTENTION_MODES, PartQueryDecoderLayer

MODALITIES = ('image', 'text')
EMBED_NORMS = (None, 'bn')
IMAGE_POS_EMBEDS = (None, 'sine')


def sine_grid_embedding(h: int, w: int, dims: int) -> Tensor:
    """Fixed 2-D sinusoidal embedding of an (h, w) token grid.

    The first half of the channels encodes the row, the second half the
    column, each with sines and cosines at geometrically spaced frequencies
    (the Transformer's 1-D code, per axis). Positions are in units of one
    cell, so a finer grid gets finer codes over the same frequencies.

    Args:
        h (int): Rows of the grid.
        w (int): Columns of the grid.
        dims (int): Channels; a multiple of 4.

    Returns:
        Tensor: (h * w, dims), row-major like a flattened feature map.

    Example:
        >>> sine_grid_embedding(16, 6, 128).shape
        torch.Size([96, 128])
    """
    if dims % 4:
        raise ValueError(f'a 2-D sine embedding needs dims divisible by 4, got {dims}')
    quarter = dims // 4
    freqs = 1.0 / (100.0 ** (torch.arange(quarter, dtype=torch.float32) / quarter))
    rows = torch.arange(h, dtype=torch.float32)[:, None] * freqs  # (h, quarter)
    cols = torch.arange(w, dtype=torch.float32)[:, None] * freqs
    row_code = torch.cat([rows.sin(), rows.cos()], dim=1)  # (h, dims / 2)
    col_code = torch.cat([cols.sin(), cols.cos()], dim=1)
    grid = torch.cat(
        [
            row_code[:, None].expand(h, w, -1),
            col_code[None, :].expand(h, w, -1),
        ],
        dim=-1,
    )
    return grid.reshape(h * w, dims)


@MODELS.register_module()
class PartQueryDecoderHead(BaseModule):
    """K learnable part queries decoded against either modality's tokens.

    Args:
        image_in_channels (int): Channels of the image encoder's tokens and
            pooled feature (768 for ViT-B, 2048 for ResNet-50).
        text_in_channels (int): Channels of the text encoder's tokens and
            pooled feature (512 for the CLIP text transformer).
        embed_dims (int): Size D of coarse and part embeddings. Defaults to
            512.
        num_parts (int): Number K of part queries; 0 gives a global-only
            head (coarse embeddings, empty part embeddings). Defaults to 6.
        decoder_dims (int): Width of the shared decoder. Defaults to 512.
        num_layers (int): Shared decoder layers. Defaults to 2.
        num_heads (int): Attention heads in the decoder. Defaults to 8.
        feedforward_ratio (float): FFN width over ``decoder_dims``; 0 leaves
            the decoder's FFN out. Defaults to 4.
        attention (str): ``'cross'`` (softmax over tokens) or ``'slot'``
            (softmax over queries, so they compete for tokens). Defaults to
            ``'cross'``.
        dropout (float): Dropout in the decoder. Defaults to 0.
        coarse_bias (bool): Bias in the coarse projections. CLIP's
            projections have none, so the converted ones load only with
            False. Defaults to False.
        embed_norm (str, optional): ``'bn'`` adds a per-modality
            BatchNorm1d after the coarse and part projections (re-ID's
            "BNNeck"). Trained from scratch, the embeddings of a batch
            otherwise start nearly identical and the cross-modal losses
            settle in that collapsed state; centring each dimension over the
            batch keeps them apart. None for pretrained encoders. Defaults
            to None.
        init_cfg (dict | list[dict], optional): MMEngine init config, e.g.
            ``dict(type='Pretrained', checkpoint=..., prefix='head.')``.

    Example:
        >>> head = PartQueryDecoderHead(64, 32, embed_dims=16, num_parts=3,
        ...                             decoder_dims=32, num_heads=4)
        >>> out = head(torch.rand(2, 10, 64), torch.rand(2, 64),
        ...            modality='image')
        >>> [tuple(v.shape) for v in out.values()]
        [(2, 16), (2, 3, 16), (2, 3, 10)]
    """

    def __init__(
        self,
        image_in_channels: int,
        text_in_channels: int,
        embed_dims: int = 512,
        num_parts: int = 6,
        decoder_dims: int = 512,
        num_layers: int = 2,
        num_heads: int = 8,
        feedforward_ratio: float = 4,
        attention: str = 'cross',
        dropout: float = 0.0,
        coarse_bias: bool = False,
        embed_norm: Optional[str] = None,
        image_token_channels: Optional[int] = None,
        image_pos_embed: Optional[str] = None,
        self_attention: bool = True,
        init_cfg: Optional[dict] = None,
    ) -> None:
        super().__init__(init_cfg=init_cfg)
        if num_parts < 0:
            raise ValueError(f'num_parts must be >= 0, got {num_parts}')
        if attention not in ATTENTION_MODES:
            raise ValueError(
                f'attention must be one of {ATTENTION_MODES}, got {attention!r}'
            )
        if image_pos_embed not in IMAGE_POS_EMBEDS:
            raise ValueError(
                f'image_pos_embed must be one of {IMAGE_POS_EMBEDS}, '
                f'got {image_pos_embed!r}'
            )
        self.image_pos_embed = image_pos_embed
        self.in_channels = dict(image=image_in_channels, text=text_in_channels)
        self.token_channels = dict(
            image=image_token_channels or image_in_channels, text=text_in_channels
        )
        self.embed_dims = embed_dims
        self.num_parts = num_parts
        self.attention = attention
        if embed_norm not in EMBED_NORMS:
            raise ValueError(
                f'embed_norm must be one of {EMBED_NORMS}, got {embed_norm!r}'
            )
        self.embed_norm = embed_norm
        self.image_coarse_proj = nn.Linear(
            image_in_channels, embed_dims, bias=coarse_bias
        )
        self.text_coarse_proj = nn.Linear(
            text_in_channels, embed_dims, bias=coarse_bias
        )
        if embed_norm == 'bn':
            self.image_coarse_norm = nn.BatchNorm1d(embed_dims)
            self.text_coarse_norm = nn.BatchNorm1d(embed_dims)
        if num_parts == 0:
            return
        # Per-modality projection into the shared decoder; the LayerNorm puts
        # both modalities' tokens on one scale before the shared layers.
        self.image_token_proj = nn.Sequential(
            nn.Linear(self.token_channels['image'], decoder_dims),
            nn.LayerNorm(decoder_dims),
        )
        self.text_token_proj = nn.Sequential(
            nn.Linear(text_in_channels, decoder_dims), nn.LayerNorm(decoder_dims)
        )
        self.part_queries = nn.Parameter(torch.zeros(num_parts, decoder_dims))
        trunc_normal_(self.part_queries, std=0.02)
        self.decoder = nn.ModuleList(
            PartQueryDecoderLayer(
                decoder_dims,
                num_heads,
                int(decoder_dims * feedforward_ratio),
                attention=attention,
                dropout=dropout,
                self_attention=self_attention,
            )
            for _ in range(num_layers)
        )
        self.part_norm = nn.LayerNorm(decoder_dims)
        self.part_proj = nn.Linear(decoder_dims, embed_dims)
        if embed_norm == 'bn':
            # One statistic per (part, dimension): parts differ in scale.
            self.image_part_norm = nn.BatchNorm1d(num_parts * embed_dims)
            self.text_part_norm = nn.BatchNorm1d(num_parts * embed_dims)

    def _check_inputs(
        self, tokens: Tensor, pooled: Tensor, mask: Optional[Tensor], modality: str
    ) -> None:
        if modality not in MODALITIES:
            raise ValueError(f'modality must be one of {MODALITIES}, got {modality!r}')
        channels = self.in_channels[modality]
        token_channels = self.token_channels[modality]
        if tokens.dim() != 3 or pooled.dim() != 2:
            raise ValueError(
                f'{modality} inputs must be tokens (B, N, C) and pooled (B, C), '
                f'got {tuple(tokens.shape)} and {tuple(pooled.shape)}'
            )
        if tokens.shape[-1] != token_channels or pooled.shape[-1] != channels:
            raise ValueError(
                f'{modality} features have {tokens.shape[-1]} (tokens) / '
                f'{pooled.shape[-1]} (pooled) channels but the head was built '
                f'with {modality}_in_channels={channels}'
                + (
                    f', image_token_channels={token_channels}'
                    if modality == 'image'
                    else ''
                )
            )
        if mask is not None and mask.shape != tokens.shape[:2]:
            raise ValueError(
                f'{modality} mask has shape {tuple(mask.shape)}, expected '
                f'{tuple(tokens.shape[:2])}'
            )

    def forward(
        self,
        tokens: Tensor,
        pooled: Tensor,
        mask: Optional[Tensor] = None,
        modality: str = 'image',
        hw: Optional[Tuple[int, int]] = None,
    ) -> Dict[str, Tensor]:
        """Embed one modality's encoder output.

        Args:
            tokens (Tensor): (B, N, C) token features.
            pooled (Tensor): (B, C) pooled feature (CLS / EOT / mean).
            mask (Tensor, optional): (B, N), nonzero for real tokens.
            modality (str): ``'image'`` or ``'text'``: selects the
                per-modality projections.
            hw (tuple[int, int], optional): The (h, w) grid of image tokens,
                row-major; needed with ``image_pos_embed``.

        Returns:
            dict[str, Tensor]: ``embed`` (B, D) coarse embedding,
            ``part_embeds`` (B, K, D) and ``attn`` (B, K, N) the last decoder
            layer's attention of each query over the tokens (averaged over
            heads). Embeddings are not normalised.
        """
        self._check_inputs(tokens, pooled, mask, modality)
        B, N, _ = tokens.shape
        coarse_proj = getattr(self, f'{modality}_coarse_proj')
        embed = coarse_proj(pooled)
        if self.embed_norm == 'bn':
            embed = getattr(self, f'{modality}_coarse_norm')(embed)
        if self.num_parts == 0:
            return dict(
                embed=embed,
                part_embeds=embed.new_zeros(B, 0, self.embed_dims),
                attn=tokens.new_zeros(B, 0, N),
            )
        memory = getattr(self, f'{modality}_token_proj')(tokens)
        if modality == 'image' and self.image_pos_embed == 'sine':
            if hw is None or hw[0] * hw[1] != N:
                raise ValueError(
                    f"image_pos_embed='sine' needs the token grid of the {N} "
                    f'image tokens, got hw={hw}'
                )
            code = sine_grid_embedding(hw[0], hw[1], memory.shape[-1])
            memory = memory + code.to(memory)
        query = self.part_queries.unsqueeze(0).expand(B, -1, -1)
        attn = None
        for layer in self.decoder:
            query, attn = layer(query, memory, mask)
        part_embeds = self.part_proj(self.part_norm(query))
        if self.embed_norm == 'bn':
            norm = getattr(self, f'{modality}_part_norm')
            part_embeds = norm(part_embeds.flatten(1)).view_as(part_embeds)
        return dict(embed=embed, part_embeds=part_embeds, attn=attn)


__all__ = ['PartQueryDecoderHead', 'sine_grid_embedding']
