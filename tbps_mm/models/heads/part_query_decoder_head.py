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

from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmengine.model.weight_init import trunc_normal_
from torch import Tensor, nn

from tbps_mm.registry import MODELS

from .part_query_decoder_layer import ATTENTION_MODES, PartQueryDecoderLayer

MODALITIES = ('image', 'text')
EMBED_NORMS = (None, 'bn')
IMAGE_POS_EMBEDS = (None, 'sine')
IMAGE_SPATIAL_PRIORS = (None, 'gaussian')


def gaussian_prior_logits(centres: Tensor, scales: Tensor, h: int, w: int) -> Tensor:
    """Log of an axis-aligned Gaussian of each query over an (h, w) grid.

    Coordinates are fractions of the image: a cell's centre is at
    ``((row + 0.5) / h, (col + 0.5) / w)``.

    Args:
        centres (Tensor): (K, 2) centres (y, x) in image fractions.
        scales (Tensor): (K, 2) standard deviations (y, x) in image
            fractions, positive.
        h (int): Rows of the grid.
        w (int): Columns of the grid.

    Returns:
        Tensor: (K, h * w) logits ``-0.5 * ((y - cy) / sy)**2 - 0.5 * ((x -
        cx) / sx)**2``, row-major like a flattened feature map.

    Example:
        >>> gaussian_prior_logits(torch.full((2, 2), 0.5), torch.ones(2, 2),
        ...                       4, 2).shape
        torch.Size([2, 8])
    """
    ys = (torch.arange(h, dtype=centres.dtype, device=centres.device) + 0.5) / h
    xs = (torch.arange(w, dtype=centres.dtype, device=centres.device) + 0.5) / w
    dy = (ys[None, :] - centres[:, :1]) / scales[:, :1]  # (K, h)
    dx = (xs[None, :] - centres[:, 1:]) / scales[:, 1:]  # (K, w)
    return -0.5 * (dy[:, :, None] ** 2 + dx[:, None, :] ** 2).reshape(-1, h * w)


def _nearest_index(
    size: Tuple[int, int], target: Tuple[int, int], device: torch.device
) -> Tensor:
    """Flat index of the (h, w) cell that nearest upsampling to ``target``
    copies into each target cell, row-major: torch's own rounding, taken from
    ``F.interpolate`` of the cells' indices."""
    cells = torch.arange(size[0] * size[1], dtype=torch.float32, device=device)
    upsampled = F.interpolate(
        cells.view(1, 1, *size), size=tuple(target), mode='nearest'
    )
    return upsampled.flatten().long()


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
        image_token_channels (int, optional): Channels of the image tokens
            the queries attend to, when they differ from the pooled
            feature's (e.g. several stages' maps concatenated). None: the
            same as ``image_in_channels``.
        image_pos_embed (str, optional): ``'sine'`` adds a fixed 2-D sine
            code of each image token's grid position before the decoder.
        image_spatial_prior (str, optional): ``'gaussian'`` gives every part
            query a learnable spatial prior over the image grid: an
            axis-aligned Gaussian whose log is added to the query's image
            attention logits (the spatially modulated co-attention of SMCA,
            Gao et al., ICCV 2021). The K centres start on K horizontal
            stripes down the middle of the crop (PCB's stripes, Sun et al.,
            ECCV 2018) and move in training unless
            ``image_prior_learn_centres=False``; within its Gaussian a
            query attends by content. No part label is used. None: plain
            content attention. Defaults to None.
        image_prior_scales (Sequence, optional): The spatial priors'
            starting standard deviations (y, x) in fractions of the image
            height and width: one pair for every query, or K pairs, one per
            query (top stripe first). None: ``(0.5 / K, 0.25)``, half a
            stripe down and a quarter of the width across.
        image_prior_centres (Sequence, optional): The spatial priors'
            starting centres, K pairs (y, x) in fractions of the image
            height and width, one per query. None: the K stripes,
            ``((k + 0.5) / K, 0.5)``. Defaults to None.
        image_prior_learn_centres (bool): Whether training moves the
            priors' centres (their widths are always learned). False keeps
            every query around its stripe, so the queries cannot drift onto
            one region. Defaults to True.
        self_attention (bool): Whether the decoder's queries attend to each
            other before the cross-attention. Defaults to True.
        attn_logit_cap (float, optional): Soft cap on the decoder's
            cross-attention content logits, ``cap * tanh(logits / cap)``,
            applied before the spatial prior is added, so that the prior
            keeps its weight. The decoder is shared, so captions' attention
            is capped too. None: no cap. Defaults to None.
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
        image_spatial_prior: Optional[str] = None,
        image_prior_scales: Optional[Sequence] = None,
        image_prior_centres: Optional[Sequence] = None,
        image_prior_learn_centres: bool = True,
        self_attention: bool = True,
        attn_logit_cap: Optional[float] = None,
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
        if image_spatial_prior not in IMAGE_SPATIAL_PRIORS:
            raise ValueError(
                f'image_spatial_prior must be one of {IMAGE_SPATIAL_PRIORS}, '
                f'got {image_spatial_prior!r}'
            )
        self.image_pos_embed = image_pos_embed
        self.image_spatial_prior = image_spatial_prior if num_parts else None
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
                logit_cap=attn_logit_cap,
            )
            for _ in range(num_layers)
        )
        if self.image_spatial_prior == 'gaussian':
            # Learned as offsets from the starting stripes, so weight decay
            # pulls a prior back towards its stripe, not to the image corner.
            # The starting values are derived from K (not saved).
            init_centres = self._prior_centres(image_prior_centres, num_parts)
            init_scales = self._prior_scales(image_prior_scales, num_parts)
            self.register_buffer('prior_init_centres', init_centres, persistent=False)
            self.register_buffer(
                'prior_init_log_scales', init_scales.log().clone(), persistent=False
            )
            self.prior_centre_offsets = nn.Parameter(
                torch.zeros(num_parts, 2), requires_grad=image_prior_learn_centres
            )
            self.prior_log_scale_offsets = nn.Parameter(torch.zeros(num_parts, 2))
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

    def _check_maps(
        self, maps: Sequence[Tensor], pooled: Tensor, modality: str
    ) -> None:
        if modality != 'image':
            raise ValueError(
                'feature maps (a sequence of (B, C, H, W) tensors) are image '
                f'inputs; the {modality} modality takes tokens (B, N, C)'
            )
        shapes = [tuple(m.shape) for m in maps]
        if not maps or any(m.dim() != 4 for m in maps):
            raise ValueError(
                f'image feature maps must be (B, C, H, W) tensors, got {shapes}'
            )
        if any(m.shape[0] != maps[0].shape[0] for m in maps):
            raise ValueError(f'image feature maps of different batch sizes: {shapes}')
        if sum(m.shape[1] for m in maps) != self.token_channels['image']:
            raise ValueError(
                f'image feature maps {shapes} have '
                f'{sum(m.shape[1] for m in maps)} channels in all but the head '
                f'was built with image_token_channels={self.token_channels["image"]}'
            )
        if pooled.dim() != 2 or pooled.shape[-1] != self.in_channels['image']:
            raise ValueError(
                f'image pooled feature must be (B, {self.in_channels["image"]}), '
                f'got {tuple(pooled.shape)}'
            )

    def _project_image_maps(self, maps: Sequence[Tensor]) -> Tensor:
        """(B, N, decoder_dims) tokens on the first map's grid from every map.

        The same function as ``image_token_proj`` on the maps upsampled to the
        first map's grid (nearest) and concatenated along the channels, since
        a linear map commutes with nearest upsampling: each map is projected
        by its slice of the weight at its own resolution and only then
        brought onto the fine grid, so a coarse map's projection costs its own
        tokens, not the fine grid's.
        """
        linear, norm = self.image_token_proj
        h, w = maps[0].shape[-2:]
        memory: Optional[Tensor] = None
        start = 0
        for index, feature_map in enumerate(maps):
            channels = feature_map.shape[1]
            weight = linear.weight[:, start : start + channels]
            start += channels
            projected = F.linear(
                feature_map.flatten(2).transpose(1, 2),
                weight,
                linear.bias if index == 0 else None,
            )
            if feature_map.shape[-2:] != (h, w):
                projected = projected.index_select(
                    1, _nearest_index(feature_map.shape[-2:], (h, w), projected.device)
                )
            memory = projected if memory is None else memory + projected
        return norm(memory)

    @staticmethod
    def _prior_table(
        values: Sequence, num_parts: int, message: str, one_for_all: bool
    ) -> Tensor:
        """``values`` as a (K, 2) table: one (y, x) pair per query.

        With ``one_for_all`` a single pair is given to every query; anything
        else that is not K pairs raises ``ValueError(message)``.
        """
        try:
            table = torch.tensor(values, dtype=torch.float32)
        except (TypeError, ValueError) as error:
            raise ValueError(message) from error
        if one_for_all and table.dim() == 1:
            table = table.unsqueeze(0).expand(num_parts, -1)
        if table.shape != (num_parts, 2):
            raise ValueError(message)
        return table

    @classmethod
    def _prior_centres(cls, centres: Optional[Sequence], num_parts: int) -> Tensor:
        """(K, 2) starting centres from ``image_prior_centres``."""
        if centres is None:
            stripes = (torch.arange(num_parts, dtype=torch.float32) + 0.5) / num_parts
            return torch.stack([stripes, torch.full_like(stripes, 0.5)], dim=1)
        message = (
            'image_prior_centres must be one (y, x) pair of fractions in [0, 1] '
            f'per part query ({num_parts}), got {centres!r}'
        )
        # Not one pair for all: that would stack every query on one spot.
        table = cls._prior_table(centres, num_parts, message, one_for_all=False)
        if not bool(((table >= 0) & (table <= 1)).all()):
            raise ValueError(message)
        return table

    @classmethod
    def _prior_scales(cls, scales: Optional[Sequence], num_parts: int) -> Tensor:
        """(K, 2) starting standard deviations from ``image_prior_scales``."""
        if scales is None:
            scales = (0.5 / num_parts, 0.25)
        message = (
            'image_prior_scales must be two positive fractions (y, x) or one '
            f'such pair per part query ({num_parts}), got {scales!r}'
        )
        table = cls._prior_table(scales, num_parts, message, one_for_all=True)
        if not bool((table > 0).all()):
            raise ValueError(message)
        return table

    def spatial_prior(self) -> Tuple[Tensor, Tensor]:
        """The part queries' spatial priors over the image.

        Returns:
            tuple[Tensor, Tensor]: (K, 2) centres and (K, 2) standard
            deviations, (y, x) in fractions of the image height and width.
        """
        if self.image_spatial_prior is None:
            raise ValueError('the head was built without image_spatial_prior')
        centres = self.prior_init_centres + self.prior_centre_offsets
        scales = (self.prior_init_log_scales + self.prior_log_scale_offsets).exp()
        return centres, scales

    def prior_attention(self, hw: Tuple[int, int]) -> Tensor:
        """Each query's attention over an image grid from its prior alone.

        What the decoder's image attention would be if every token's content
        logit were equal: the softmax of the spatial prior over the grid. It
        is the baseline that says how far content moves a query off its
        prior (``tools/analysis_tools/part_localisation.py``).

        Args:
            hw (tuple[int, int]): The (h, w) token grid.

        Returns:
            Tensor: (K, h * w), rows summing to 1, row-major like a
            flattened feature map.

        Raises:
            ValueError: The head was built without ``image_spatial_prior``.

        Example:
            >>> head = PartQueryDecoderHead(
            ...     32, 32, 16, num_parts=2, image_spatial_prior='gaussian')
            >>> head.prior_attention((4, 2)).shape
            torch.Size([2, 8])
        """
        h, w = int(hw[0]), int(hw[1])
        return gaussian_prior_logits(*self.spatial_prior(), h, w).softmax(-1)

    @staticmethod
    def _image_grid(
        hw: Optional[Tuple[int, int]], n: int, option: str
    ) -> Tuple[int, int]:
        if hw is None or hw[0] * hw[1] != n:
            raise ValueError(
                f'{option} needs the token grid of the {n} image tokens, got hw={hw}'
            )
        return int(hw[0]), int(hw[1])

    def forward(
        self,
        tokens: Union[Tensor, Sequence[Tensor]],
        pooled: Tensor,
        mask: Optional[Tensor] = None,
        modality: str = 'image',
        hw: Optional[Tuple[int, int]] = None,
    ) -> Dict[str, Tensor]:
        """Embed one modality's encoder output.

        Args:
            tokens (Tensor | Sequence[Tensor]): (B, N, C) token features; or,
                for images, feature maps (B, C_i, H_i, W_i), the finest
                first, whose tokens are those of the first map's grid with
                every map's features upsampled onto it (nearest) and
                concatenated along the channels (channels summing to
                ``image_token_channels``; ``hw`` is then the first map's).
                The head projects each map at its own resolution, which
                gives the same tokens at a fraction of the work.
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
        maps: Optional[List[Tensor]] = None
        if isinstance(tokens, Tensor):
            self._check_inputs(tokens, pooled, mask, modality)
            B, N, _ = tokens.shape
        else:
            maps = list(tokens)
            self._check_maps(maps, pooled, modality)
            if mask is not None:
                raise ValueError('image feature maps take no padding mask')
            B, N = maps[0].shape[0], maps[0].shape[-2] * maps[0].shape[-1]
            hw = tuple(maps[0].shape[-2:]) if hw is None else hw
        coarse_proj = getattr(self, f'{modality}_coarse_proj')
        embed = coarse_proj(pooled)
        if self.embed_norm == 'bn':
            embed = getattr(self, f'{modality}_coarse_norm')(embed)
        if self.num_parts == 0:
            return dict(
                embed=embed,
                part_embeds=embed.new_zeros(B, 0, self.embed_dims),
                attn=pooled.new_zeros(B, 0, N),
            )
        if maps is not None:
            memory = self._project_image_maps(maps)
        else:
            memory = getattr(self, f'{modality}_token_proj')(tokens)
        if modality == 'image' and self.image_pos_embed == 'sine':
            h, w = self._image_grid(hw, N, 'image_pos_embed')
            code = sine_grid_embedding(h, w, memory.shape[-1])
            memory = memory + code.to(memory)
        bias = None
        if modality == 'image' and self.image_spatial_prior == 'gaussian':
            bias = gaussian_prior_logits(
                *self.spatial_prior(), *self._image_grid(hw, N, 'image_spatial_prior')
            ).to(memory)
        query = self.part_queries.unsqueeze(0).expand(B, -1, -1)
        attn = None
        for layer in self.decoder:
            query, attn = layer(query, memory, mask, bias)
        part_embeds = self.part_proj(self.part_norm(query))
        if self.embed_norm == 'bn':
            norm = getattr(self, f'{modality}_part_norm')
            part_embeds = norm(part_embeds.flatten(1)).view_as(part_embeds)
        return dict(embed=embed, part_embeds=part_embeds, attn=attn)


__all__ = ['PartQueryDecoderHead', 'gaussian_prior_logits', 'sine_grid_embedding']
