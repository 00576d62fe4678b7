"""``CommonalityMarginRankingLoss`` (L_CMR) on part embeddings.

The paper (Park et al., arXiv 2501.00318) introduces a commonality-based
margin ranking loss: body parts that are common across people (two people
both in black trousers) should not be pushed apart as hard as distinctive
ones. Its exact form is not available to us; this module implements OUR
formulation (docs/method.md, section 3), with every unknown exposed as an option:

* part similarity ``s^k(i, j) = <g_i^k, f_j^k>`` (text i, image j, both L2
  normalised);
* commonality ``c^k(i, j)`` in [0, 1], computed without gradient, either per
  pair (``'pair'``: the clamped mean of the intra-image and intra-text part
  similarities of i and j) or per sample (``'sample'``: the share of the other
  identities in the batch having some sample whose part k is similar, above
  ``sample_threshold``, to sample i's), per pair from one modality only
  (``'image'`` / ``'text'``: the part-k similarity of i and j within that
  modality relative to the batch's baseline for part k, the mean over its
  pairs of different identities: ``(s - b) / (1 - b)`` clamped to [0, 1]),
  or from attribute labels (``'oracle'``: ``c^k(i, j) = 1`` when i and j
  have the same values of body part k's attributes, else 0; a SynthPedes
  diagnostic that needs the samples' ``part_codes``, never a training recipe);
* margin ``m^k(i, j) = max(margin_max * (1 - c^k(i, j)), margin_min)``, or
  ``margin_max`` everywhere with ``margin_mode='fixed'``;
* a bidirectional hinge ``[m - s^k(i, i) + s^k(i, j)]_+`` over negatives
  ``y_j != y_i`` (text->image and image->text), averaged over all or the
  hardest ``n`` negatives per anchor, over anchors and over parts; the two
  directions are summed.

With ``gather=True`` a distributed run takes the negatives (and the
commonality statistics) from the whole global batch: each process's samples
are the anchors, every process's samples the candidates
(``batch_gather.gather_batch``).

Written by hand (no OpenMMLab package has it), fully vectorised over parts,
anchors and negatives.
"""

from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tbps_mm.registry import MODELS

from .batch_gather import gather_batch

MARGIN_MODES = ('commonality', 'fixed')
COMMONALITY_MODES = ('pair', 'sample', 'image', 'text', 'oracle')


@MODELS.register_module()
class CommonalityMarginRankingLoss(nn.Module):
    """Part-level ranking loss whose margin shrinks for common parts.

    Args:
        margin_max (float): Margin of a part the negative does not share
            (commonality 0). Defaults to 0.3.
        margin_min (float): Floor of the margin (commonality 1). Defaults to
            0.05.
        margin_mode (str): ``'commonality'`` or ``'fixed'`` (``margin_max``
            everywhere: a plain part-level ranking loss, the ablation).
            Defaults to ``'commonality'``.
        commonality (str): ``'pair'``, ``'sample'``, ``'image'``, ``'text'``
            or ``'oracle'`` (see the module doc; ``'oracle'`` needs
            ``part_codes`` in :meth:`forward`, one code per part, so the
            model's K must equal the number of coded body parts, and works in
            one process only). Defaults to ``'pair'``.
        negatives (str | int): ``'all'`` or the number n of hardest negatives
            (largest hinge) kept per anchor and part. Defaults to ``'all'``.
        loss_weight (float): Multiplier of the loss. Defaults to 1.0.
        sample_threshold (float): Intra-modal part similarity above which
            two samples' part k counts as shared, for ``commonality='sample'``.
            Defaults to 0.5.
        gather (bool): In a distributed run, take the negatives of the local
            anchors from the samples (and identities) of every process, with
            gradients flowing back to each sample's process. The
            per-process loss is the sum of its anchors' terms times
            ``world_size / (global anchors with a negative)``, so that its
            mean over processes (what DDP's gradient averaging computes) is
            the single-process loss on the global batch. Without a process
            group it changes nothing. Defaults to False (each process's own
            batch).
        log_kept_margin (bool): Expose the mean margin of the kept negatives
            of every training step in :attr:`last_stats`, which the
            retriever adds to its loss dict (``cmr_kept_margin``, logged,
            not summed). A diagnostic; defaults to False.
        oracle_parts (Sequence[int], optional): For ``'oracle'``: which
            columns of ``part_codes`` (body parts, in the dataset's order)
            the K queries stand for, one per query, e.g. ``(0, 1, 2, 3)``
            for head, upper, lower and feet of SynthPedes' five coded parts.
            None: every column, in order (K must equal the number of coded
            parts). Defaults to None.

    Example:
        >>> loss = CommonalityMarginRankingLoss()
        >>> loss(torch.randn(4, 3, 8), torch.randn(4, 3, 8),
        ...      torch.tensor([0, 0, 1, 2]))
        tensor(...)
    """

    #: What the retriever feeds this loss: the part embeddings.
    input_key = 'part_embeds'

    def __init__(
        self,
        margin_max: float = 0.3,
        margin_min: float = 0.05,
        margin_mode: str = 'commonality',
        commonality: str = 'pair',
        negatives: Union[str, int] = 'all',
        loss_weight: float = 1.0,
        sample_threshold: float = 0.5,
        gather: bool = False,
        log_kept_margin: bool = False,
        oracle_parts: Optional[Sequence[int]] = None,
    ) -> None:
        super().__init__()
        if oracle_parts is not None and (
            len(oracle_parts) == 0
            or any(isinstance(p, bool) or int(p) != p or p < 0 for p in oracle_parts)
        ):
            raise ValueError(
                'oracle_parts must be column indices of part_codes, one per part '
                f'query, got {oracle_parts!r}'
            )
        self.oracle_parts = (
            None if oracle_parts is None else tuple(map(int, oracle_parts))
        )
        if margin_mode not in MARGIN_MODES:
            raise ValueError(
                f'margin_mode must be one of {MARGIN_MODES}, got {margin_mode!r}'
            )
        if commonality not in COMMONALITY_MODES:
            raise ValueError(
                f'commonality must be one of {COMMONALITY_MODES}, got {commonality!r}'
            )
        if negatives != 'all' and not (
            isinstance(negatives, int)
            and not isinstance(negatives, bool)
            and negatives > 0
        ):
            raise ValueError(
                f"negatives must be 'all' or a positive int, got {negatives!r}"
            )
        if not 0 <= margin_min <= margin_max:
            raise ValueError(
                f'need 0 <= margin_min <= margin_max, got {margin_min}, {margin_max}'
            )
        self.margin_max = margin_max
        self.margin_min = margin_min
        self.margin_mode = margin_mode
        self.commonality = commonality
        self.negatives = negatives
        self.loss_weight = loss_weight
        self.sample_threshold = sample_threshold
        self.gather = gather
        self.log_kept_margin = bool(log_kept_margin)
        if commonality == 'oracle' and gather:
            raise ValueError("commonality='oracle' does not support gather=True")
        #: Statistics of the last training forward (``kept_margin``: the mean
        #: margin of the kept negatives), which the retriever logs.
        self.last_stats: dict = {}

    @property
    def needs_part_codes(self) -> bool:
        """Whether :meth:`forward` needs the samples' ``part_codes``."""
        return self.margin_mode == 'commonality' and self.commonality == 'oracle'

    @torch.no_grad()
    def part_commonality(
        self,
        image_parts: Tensor,
        text_parts: Tensor,
        labels: Tensor,
        candidates: Optional[Tuple[Tensor, Tensor, Tensor]] = None,
        part_codes: Optional[Tensor] = None,
    ) -> Tensor:
        """Commonality of every part between samples, without gradient.

        Args:
            image_parts (Tensor): (K, B, D) L2-normalised image parts of the
                anchors.
            text_parts (Tensor): (K, B, D) L2-normalised text parts.
            labels (Tensor): (B,) person labels.
            candidates (tuple[Tensor, Tensor, Tensor], optional): Image
                parts (K, M, D), text parts (K, M, D) and labels (M,) of the
                samples the anchors are compared with, the anchors among
                them (the global batch of a gathered loss). Defaults to the
                anchors themselves (M = B).
            part_codes (Tensor, optional): (B, K) integer codes of every
                sample's body parts (``'oracle'`` only; equal codes = the
                same attribute values).

        Returns:
            Tensor: (K, B, M) ``c^k(i, j)`` for ``'pair'``, ``'image'``,
            ``'text'`` and ``'oracle'``; (K, B, 1) ``c^k(i)`` for ``'sample'``
            (broadcast over the negatives j).
        """
        if self.commonality == 'oracle':
            return self._oracle_commonality(image_parts, part_codes)
        all_image, all_text, all_labels = candidates or (
            image_parts,
            text_parts,
            labels,
        )
        if self.commonality in ('image', 'text'):
            own, others = (
                (image_parts, all_image)
                if self.commonality == 'image'
                else (text_parts, all_text)
            )
            sim = own @ others.transpose(1, 2)  # (K, B, M)
            negative = (labels[:, None] != all_labels[None, :]).to(sim.dtype)
            count = negative.sum().clamp(min=1.0)
            baseline = (sim * negative).sum(dim=(1, 2), keepdim=True) / count
            baseline = baseline.clamp(max=1.0 - 1e-6)
            return ((sim - baseline) / (1.0 - baseline)).clamp(0.0, 1.0)
        intra = 0.5 * (
            image_parts @ all_image.transpose(1, 2)
            + text_parts @ all_text.transpose(1, 2)
        )
        if self.commonality == 'pair':
            return intra.clamp(0.0, 1.0)
        negative = labels[:, None] != all_labels[None, :]
        shared = (intra > self.sample_threshold) & negative  # (K, B, M)
        ids, index = torch.unique(all_labels, return_inverse=True)
        one_hot = F.one_hot(index, num_classes=ids.numel()).to(intra.dtype)  # (M, U)
        ids_sharing = ((shared.to(intra.dtype) @ one_hot) > 0).sum(dim=-1)  # (K, B)
        other_ids = max(ids.numel() - 1, 1)
        return (ids_sharing.to(intra.dtype) / other_ids).unsqueeze(-1)

    def _oracle_commonality(
        self, image_parts: Tensor, part_codes: Optional[Tensor]
    ) -> Tensor:
        """(K, B, B) 1 where two samples share body part k's attributes."""
        num_parts, batch = image_parts.shape[:2]
        if part_codes is None:
            raise ValueError(
                "commonality='oracle' needs the samples' part_codes (SynthPedes "
                'with with_part_codes=True)'
            )
        codes = torch.as_tensor(part_codes, device=image_parts.device)
        if self.oracle_parts is not None:
            if codes.dim() != 2 or max(self.oracle_parts) >= codes.shape[1]:
                raise ValueError(
                    f'oracle_parts {self.oracle_parts} name columns that the '
                    f'part_codes of shape {tuple(codes.shape)} do not have'
                )
            codes = codes[:, list(self.oracle_parts)]
        if codes.shape != (batch, num_parts):
            raise ValueError(
                f"commonality='oracle' needs part_codes of shape (B, K) = "
                f'({batch}, {num_parts}), got {tuple(codes.shape)}: the model '
                'needs one part query per coded body part (or oracle_parts '
                'naming the body part of each query)'
            )
        codes = codes.t()  # (K, B)
        return (codes[:, :, None] == codes[:, None, :]).to(image_parts.dtype)

    @torch.no_grad()
    def part_margins(
        self,
        image_parts: Tensor,
        text_parts: Tensor,
        labels: Tensor,
        candidates: Optional[Tuple[Tensor, Tensor, Tensor]] = None,
        part_codes: Optional[Tensor] = None,
    ) -> Tensor:
        """Margin ``m^k(i, j)`` of every part between samples, without gradient.

        Args:
            image_parts (Tensor): (K, B, D) L2-normalised image parts of the
                anchors.
            text_parts (Tensor): (K, B, D) L2-normalised text parts.
            labels (Tensor): (B,) person labels.
            candidates (tuple[Tensor, Tensor, Tensor], optional): The samples
                the anchors are compared with, as in
                :meth:`part_commonality`. Defaults to the anchors.
            part_codes (Tensor, optional): For ``'oracle'`` commonality.

        Returns:
            Tensor: Broadcastable to (K, B, M): a scalar for
            ``margin_mode='fixed'``, else (K, B, M) for ``'pair'``,
            ``'image'``, ``'text'`` and ``'oracle'``, and (K, B, 1) for
            ``'sample'`` commonality.
        """
        if self.margin_mode == 'fixed':
            return image_parts.new_tensor(self.margin_max)
        common = self.part_commonality(
            image_parts, text_parts, labels, candidates, part_codes
        )
        return (self.margin_max * (1.0 - common)).clamp(min=self.margin_min)

    def _reduce(
        self, hinge: Tensor, negative: Tensor, margin: Tensor
    ) -> Tuple[Tensor, Tensor]:
        """(K, B) mean over negatives of (K, B, M) anchor-by-candidate hinges,
        and the mean margin of the negatives kept (a detached scalar)."""
        margin = margin.expand_as(hinge)
        if self.negatives == 'all':
            weights = negative.to(hinge.dtype).expand_as(hinge)
            per_anchor = (hinge * weights).sum(-1) / weights.sum(-1).clamp(min=1.0)
        else:
            n = min(self.negatives, hinge.shape[-1])
            # Non-negatives score -1 (real hinges are >= 0) so topk skips them.
            values, index = hinge.masked_fill(~negative, -1.0).topk(n, dim=-1)
            weights = (values >= 0).to(hinge.dtype)
            per_anchor = (values.clamp(min=0.0) * weights).sum(-1) / weights.sum(
                -1
            ).clamp(min=1.0)
            margin = margin.gather(-1, index)
        kept = (margin.detach() * weights).sum() / weights.sum().clamp(min=1.0)
        return per_anchor, kept

    def forward(
        self,
        image_parts: Tensor,
        text_parts: Tensor,
        labels: Tensor,
        part_codes: Optional[Tensor] = None,
    ) -> Tensor:
        """Compute the loss.

        Args:
            image_parts (Tensor): (B, K, D) image part embeddings (any norm).
            text_parts (Tensor): (B, K, D) text part embeddings of the same
                pairs.
            labels (Tensor): (B,) person labels.
            part_codes (Tensor, optional): (B, K) body-part codes, for
                ``commonality='oracle'`` only.

        Returns:
            Tensor: The scalar loss (0, still attached to the graph, when the
            batch has no negatives or K = 0).
        """
        if image_parts.shape != text_parts.shape or image_parts.dim() != 3:
            raise ValueError(
                'CommonalityMarginRankingLoss expects image and text parts of one '
                f'shape (B, K, D), got {tuple(image_parts.shape)} and '
                f'{tuple(text_parts.shape)}'
            )
        labels = labels.view(-1)
        if labels.numel() != image_parts.shape[0]:
            raise ValueError(
                f'got {labels.numel()} labels for {image_parts.shape[0]} samples'
            )
        # Margins of a few hundredths need more precision than float16 (AMP).
        dtype = torch.promote_types(image_parts.dtype, torch.float32)
        with torch.autocast(device_type=image_parts.device.type, enabled=False):
            image = F.normalize(image_parts.to(dtype), dim=-1)
            text = F.normalize(text_parts.to(dtype), dim=-1)
            batch = gather_batch(image, text, labels, enabled=self.gather)
            all_image, all_text, all_labels = batch.tensors
            all_negative = all_labels[:, None] != all_labels[None, :]  # (M, M)
            if image_parts.shape[1] == 0 or not all_negative.any():
                # Through the gathered tensors: every process runs the
                # gather's backward, whatever its own batch holds.
                return (all_image.sum() + all_text.sum()) * 0.0
            # Anchors: the local samples (rows); candidates: the batch (M).
            f = image.transpose(0, 1)  # (K, B, D)
            g = text.transpose(0, 1)
            all_f = all_image.transpose(0, 1)  # (K, M, D)
            all_g = all_text.transpose(0, 1)
            t2i = g @ all_f.transpose(1, 2)  # (K, B, M): text i vs image j
            i2t = f @ all_g.transpose(1, 2)  # (K, B, M): image i vs text j
            rows = torch.arange(labels.numel(), device=labels.device)
            positive = t2i[:, rows, rows + batch.offset].unsqueeze(-1)  # (K, B, 1)
            margin = self.part_margins(
                f.detach(),
                g.detach(),
                labels,
                candidates=(all_f.detach(), all_g.detach(), all_labels),
                part_codes=part_codes,
            )
            negative = all_negative[batch.offset : batch.offset + labels.numel()]
            # Pair margins ('pair', 'image', 'text') are symmetric, 'sample'
            # ones the anchor's: the same margin serves both directions.
            hinge_t2i = (margin - positive + t2i).clamp(min=0.0)
            hinge_i2t = (margin - positive + i2t).clamp(min=0.0)
            reduced_t2i, kept_t2i = self._reduce(hinge_t2i, negative, margin)
            reduced_i2t, kept_i2t = self._reduce(hinge_i2t, negative, margin)
            per_anchor = reduced_t2i + reduced_i2t
            if self.log_kept_margin:
                self.last_stats = dict(kept_margin=0.5 * (kept_t2i + kept_i2t))
            # Mean over parts, then over the batch's anchors with a negative.
            with_negative = negative.any(dim=1).to(dtype)
            loss = batch.anchor_mean(
                per_anchor.mean(dim=0) * with_negative,
                count=all_negative.any(dim=1).sum(),
            )
        return self.loss_weight * loss


__all__ = ['CommonalityMarginRankingLoss']
