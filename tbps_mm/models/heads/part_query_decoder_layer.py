"""One layer of the part-query decoder and its attention with exposed maps.

The layer is a pre-norm transformer decoder layer over a small set of query
tokens: self-attention among the queries, cross-attention from the queries to
a modality's token features, and an FFN. It is written by hand (rather than
``nn.TransformerDecoderLayer``) because the part decoder needs two things torch
does not offer: the cross-attention *maps* (for explanations and part
localisation) and a competitive, slot-style normalisation in which the queries
compete for each token.
"""

from typing import Optional, Tuple

import torch
from mmengine.model import BaseModule
from torch import Tensor, nn

ATTENTION_MODES = ('cross', 'slot')


class PartCrossAttention(BaseModule):
    """Multi-head attention from K queries to N tokens that returns its maps.

    ``mode='cross'`` is ordinary attention: each query's weights are a softmax
    over the tokens. ``mode='slot'`` is competitive (Slot Attention,
    Locatello et al. 2020): the softmax runs over the *query* axis, so the
    queries split each token among themselves, and the weights are then
    renormalised over the tokens to form each query's weighted mean.

    Args:
        embed_dims (int): Query / token feature size.
        num_heads (int): Attention heads.
        mode (str): ``'cross'`` or ``'slot'``. Defaults to ``'cross'``.
        attn_drop (float): Dropout on the attention weights. Defaults to 0.
        eps (float): Slot renormalisation floor. Defaults to 1e-8.
        logit_cap (float, optional): Soft cap on the content logits,
            ``cap * tanh(logits / cap)`` (the logit soft-capping of Gemma 2),
            applied before ``bias`` is added, so that an additive bias (a
            spatial prior) keeps its weight however large the learned
            query-token products grow. None: no cap. Defaults to None.

    Example:
        >>> import torch
        >>> attn = PartCrossAttention(64, 4, mode='slot')
        >>> out, maps = attn(torch.rand(2, 3, 64), torch.rand(2, 10, 64))
        >>> out.shape, maps.shape
        (torch.Size([2, 3, 64]), torch.Size([2, 3, 10]))
    """

    def __init__(
        self,
        embed_dims: int,
        num_heads: int,
        mode: str = 'cross',
        attn_drop: float = 0.0,
        eps: float = 1e-8,
        logit_cap: Optional[float] = None,
    ) -> None:
        super().__init__()
        if mode not in ATTENTION_MODES:
            raise ValueError(
                f'attention mode must be one of {ATTENTION_MODES}, got {mode!r}'
            )
        if embed_dims % num_heads:
            raise ValueError(
                f'embed_dims {embed_dims} is not divisible by num_heads {num_heads}'
            )
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.head_dims = embed_dims // num_heads
        self.mode = mode
        self.eps = eps
        if logit_cap is not None and not logit_cap > 0:
            raise ValueError(f'logit_cap must be positive, got {logit_cap!r}')
        self.logit_cap = logit_cap
        self.q_proj = nn.Linear(embed_dims, embed_dims)
        self.k_proj = nn.Linear(embed_dims, embed_dims)
        self.v_proj = nn.Linear(embed_dims, embed_dims)
        self.out_proj = nn.Linear(embed_dims, embed_dims)
        self.attn_drop = nn.Dropout(attn_drop)

    def forward(
        self,
        query: Tensor,
        tokens: Tensor,
        mask: Optional[Tensor] = None,
        bias: Optional[Tensor] = None,
    ) -> Tuple[Tensor, Tensor]:
        """Attend from ``query`` (B, K, C) to ``tokens`` (B, N, C).

        Args:
            query (Tensor): (B, K, C) query features.
            tokens (Tensor): (B, N, C) token features.
            mask (Tensor, optional): (B, N), nonzero for real tokens and zero
                for padding. None: every token is real.
            bias (Tensor, optional): (K, N) or (B, K, N) additive attention
                logits, shared by the heads (e.g. a spatial prior of each
                query over an image grid). None: no bias.

        Returns:
            tuple[Tensor, Tensor]: the attended features (B, K, C) and the
            attention maps averaged over heads (B, K, N); each row sums to 1
            over the real tokens.
        """
        B, K, _ = query.shape
        h, dh, C = self.num_heads, self.head_dims, self.embed_dims
        q = self.q_proj(query).view(B, K, h, dh).transpose(1, 2)  # (B, h, K, dh)
        # Keys and values are never formed: with K queries and h heads,
        # q . (W_k t + b_k) = (q W_k) . t + q . b_k and
        # sum_n a_n (W_v t_n + b_v) = W_v (sum_n a_n t_n) + (sum_n a_n) b_v,
        # so projecting the h*K queries into token space costs h*K*N*C per
        # layer instead of the 2*N*C*C of projecting every token: the same
        # function for a fraction of the work whenever h*K < C (every shipped
        # config: 16 against 128 for the quick start, 48 against 512 for the
        # reference CLIP model, whose N is 192 patches or up to 77 tokens).
        w_k = self.k_proj.weight.view(h, dh, C)
        w_v = self.v_proj.weight.view(h, dh, C)
        q_tokens = torch.einsum('bhkd,hdc->bhkc', q, w_k).reshape(B, h * K, C)
        logits = torch.bmm(q_tokens, tokens.transpose(1, 2)).view(B, h, K, -1)
        if self.k_proj.bias is not None:
            # Constant over the tokens: cancels in 'cross', not in 'slot'.
            logits = logits + (q * self.k_proj.bias.view(1, h, 1, dh)).sum(
                -1, keepdim=True
            )
        logits = logits * dh**-0.5  # (B, h, K, N)
        if self.logit_cap is not None:
            logits = self.logit_cap * torch.tanh(logits / self.logit_cap)
        if bias is not None:
            if bias.dim() == 2:
                bias = bias.unsqueeze(0)
            logits = logits + bias.unsqueeze(1)
        valid = None if mask is None else mask[:, None, None, :].bool()
        if self.mode == 'cross':
            if valid is not None:
                logits = logits.masked_fill(~valid, float('-inf'))
            weights = logits.softmax(dim=-1)
        else:
            # Queries compete for every token; padded tokens get no weight.
            weights = logits.softmax(dim=-2)
            if valid is not None:
                weights = weights * valid
            weights = weights / (weights.sum(dim=-1, keepdim=True) + self.eps)
        maps = weights.mean(dim=1)
        weights = self.attn_drop(weights)
        pooled = torch.bmm(weights.reshape(B, h * K, -1), tokens).view(B, h, K, C)
        out = torch.einsum('bhkc,hdc->bhkd', pooled, w_v)  # (B, h, K, dh)
        if self.v_proj.bias is not None:
            out = out + weights.sum(-1, keepdim=True) * self.v_proj.bias.view(
                1, h, 1, dh
            )
        out = out.transpose(1, 2).reshape(B, K, C)
        return self.out_proj(out), maps


class PartQueryDecoderLayer(BaseModule):
    """Pre-norm decoder layer: query self-attention, cross-attention, FFN.

    The self-attention and the FFN can be left out (``self_attention=False``,
    ``feedforward_channels=0``): a lean layer is one cross-attention with its
    residual, which on a CPU costs a fraction of the full layer's many small
    operations.

    Args:
        embed_dims (int): Feature size of queries and tokens.
        num_heads (int): Attention heads (both attentions).
        feedforward_channels (int): FFN hidden size; 0 leaves the FFN out.
        attention (str): ``'cross'`` or ``'slot'`` cross-attention.
        dropout (float): Dropout after attention / FFN. Defaults to 0.
        self_attention (bool): Whether the queries attend to each other
            first. Defaults to True.
        logit_cap (float, optional): Soft cap on the cross-attention's
            content logits (:class:`PartCrossAttention`). Defaults to None.

    Example:
        >>> import torch
        >>> layer = PartQueryDecoderLayer(64, 4, 128)
        >>> q, maps = layer(torch.rand(2, 3, 64), torch.rand(2, 10, 64))
        >>> q.shape, maps.shape
        (torch.Size([2, 3, 64]), torch.Size([2, 3, 10]))
    """

    def __init__(
        self,
        embed_dims: int,
        num_heads: int,
        feedforward_channels: int,
        attention: str = 'cross',
        dropout: float = 0.0,
        self_attention: bool = True,
        logit_cap: Optional[float] = None,
    ) -> None:
        super().__init__()
        if feedforward_channels < 0:
            raise ValueError(
                f'feedforward_channels must be >= 0, got {feedforward_channels}'
            )
        self.self_attention = self_attention
        if self_attention:
            self.norm_self = nn.LayerNorm(embed_dims)
            self.self_attn = nn.MultiheadAttention(
                embed_dims, num_heads, dropout=dropout, batch_first=True
            )
        self.norm_cross = nn.LayerNorm(embed_dims)
        self.cross_attn = PartCrossAttention(
            embed_dims,
            num_heads,
            mode=attention,
            attn_drop=dropout,
            logit_cap=logit_cap,
        )
        self.feedforward = feedforward_channels > 0
        if self.feedforward:
            self.norm_ffn = nn.LayerNorm(embed_dims)
            self.ffn = nn.Sequential(
                nn.Linear(embed_dims, feedforward_channels),
                nn.GELU(),
                nn.Dropout(dropout),
                nn.Linear(feedforward_channels, embed_dims),
            )
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        query: Tensor,
        tokens: Tensor,
        mask: Optional[Tensor] = None,
        bias: Optional[Tensor] = None,
    ) -> Tuple[Tensor, Tensor]:
        """Update the queries from the tokens.

        Args:
            query (Tensor): (B, K, C).
            tokens (Tensor): (B, N, C), already normalised by the caller.
            mask (Tensor, optional): (B, N) real-token mask.
            bias (Tensor, optional): (K, N) or (B, K, N) additive
                cross-attention logits.

        Returns:
            tuple[Tensor, Tensor]: updated queries (B, K, C) and the
            cross-attention maps (B, K, N).
        """
        if self.self_attention:
            x = self.norm_self(query)
            query = query + self.dropout(self.self_attn(x, x, x, need_weights=False)[0])
        attended, maps = self.cross_attn(self.norm_cross(query), tokens, mask, bias)
        query = query + self.dropout(attended)
        if self.feedforward:
            query = query + self.dropout(self.ffn(self.norm_ffn(query)))
        return query, maps


__all__ = ['ATTENTION_MODES', 'PartCrossAttention', 'PartQueryDecoderLayer']
