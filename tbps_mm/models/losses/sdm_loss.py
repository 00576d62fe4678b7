"""``SDMLoss``: similarity distribution matching (IRRA, Jiang & Ye, CVPR 2023).

For a batch of image / text embedding pairs with person labels, the loss is
the KL divergence between the softmax of the scaled cosine similarities of
one text to every image (and of one image to every text) and the
identity-match distribution ``q(i, j) = [y_i = y_j] / sum_j [y_i = y_j]``,
summed over both directions and averaged over the batch. Written by hand: no
OpenMMLab package ships it; this follows IRRA's ``compute_sdm``.

With ``gather=True`` a distributed run scores each process's samples against
the whole global batch (``batch_gather.gather_batch``), so an N-process step
computes the loss of its global batch, not N losses of its shares.
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tbps_mm.registry import MODELS

from .batch_gather import gather_batch

INPUT_KEYS = ('embed', 'fused_embed', 'part_embeds')


@MODELS.register_module()
class SDMLoss(nn.Module):
    """Similarity distribution matching loss on coarse (or fused) embeddings.

    Args:
        temperature (float): Softmax temperature tau (IRRA: 0.02, i.e. a
            logit scale of 50). Defaults to 0.02.
        learnable_temperature (bool): Learn ``log(1 / tau)`` (initialised
            from ``temperature``, CLIP-style, clamped to a scale <= 100).
            Defaults to False.
        epsilon (float): Added to q before the log so that zero entries stay
            finite. Defaults to 1e-8.
        loss_weight (float): Multiplier of the loss. Defaults to 1.0.
        input_key (str): The retriever output it is fed: ``'embed'`` (the
            coarse embeddings) or ``'fused_embed'`` (coarse and part
            embeddings in one vector whose dot product is the test-time
            fused score, ``TBPSRetriever.fused_embed``) or ``'part_embeds'``
            (the loss of every part on its own, averaged over the K parts:
            each part query gets its own retrieval signal, so a query whose
            embedding carries nothing, e.g. one parked on the background,
            pays for it). Defaults to ``'embed'``.
        gather (bool): In a distributed run, score the local samples
            against the samples (and identities) of every process, with
            gradients flowing back to each sample's process. The
            per-process loss is the sum of its anchors' terms times
            ``world_size / global_batch``, so that its mean over processes
            (what DDP's gradient averaging computes) is the single-process
            loss on the global batch. Without a process group it changes
            nothing. Defaults to False (each process's own batch).

    Example:
        >>> loss = SDMLoss()
        >>> loss(torch.randn(4, 8), torch.randn(4, 8), torch.tensor([0, 0, 1, 2]))
        tensor(...)
    """

    def __init__(
        self,
        temperature: float = 0.02,
        learnable_temperature: bool = False,
        epsilon: float = 1e-8,
        loss_weight: float = 1.0,
        input_key: str = 'embed',
        gather: bool = False,
    ) -> None:
        super().__init__()
        if input_key not in INPUT_KEYS:
            raise ValueError(
                f'input_key must be one of {INPUT_KEYS}, got {input_key!r}'
            )
        #: What the retriever feeds this loss.
        self.input_key = input_key
        if temperature <= 0:
            raise ValueError(f'temperature must be > 0, got {temperature}')
        log_scale = torch.tensor(math.log(1.0 / temperature))
        if learnable_temperature:
            self.log_logit_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer('log_logit_scale', log_scale, persistent=False)
        self.epsilon = epsilon
        self.loss_weight = loss_weight
        self.gather = gather

    @property
    def logit_scale(self) -> Tensor:
        """The current ``1 / tau`` (clamped to 100 as in CLIP)."""
        return self.log_logit_scale.exp().clamp(max=100.0)

    def forward(
        self, image_embeds: Tensor, text_embeds: Tensor, labels: Tensor
    ) -> Tensor:
        """Compute the loss.

        Args:
            image_embeds (Tensor): (B, D) image embeddings (any norm);
                (B, K, D) part embeddings for ``input_key='part_embeds'``.
            text_embeds (Tensor): Text embeddings of the same pairs, shaped
                like ``image_embeds``.
            labels (Tensor): (B,) person labels.

        Returns:
            Tensor: The scalar loss.
        """
        parts = self.input_key == 'part_embeds'
        if image_embeds.shape != text_embeds.shape or image_embeds.dim() != (
            3 if parts else 2
        ):
            raise ValueError(
                'SDMLoss expects image and text embeddings of one shape '
                f'{"(B, K, D)" if parts else "(B, D)"}, got '
                f'{tuple(image_embeds.shape)} and {tuple(text_embeds.shape)}'
            )
        if labels.numel() != image_embeds.shape[0]:
            raise ValueError(
                f'SDMLoss got {labels.numel()} labels for {image_embeds.shape[0]} '
                'samples'
            )
        # In float32 even under AMP: epsilon = 1e-8 underflows in float16 and
        # log(0) would turn the loss into inf / nan.
        dtype = torch.promote_types(image_embeds.dtype, torch.float32)
        with torch.autocast(device_type=image_embeds.device.type, enabled=False):
            image = F.normalize(image_embeds.to(dtype), dim=-1)
            text = F.normalize(text_embeds.to(dtype), dim=-1)
            labels = labels.view(-1)
            batch = gather_batch(image, text, labels, enabled=self.gather)
            all_image, all_text, all_labels = batch.tensors
            if parts:
                # (K, B, D): one similarity matrix per part, in one batch.
                image, text = image.transpose(0, 1), text.transpose(0, 1)
                all_image, all_text = (
                    all_image.transpose(0, 1),
                    all_text.transpose(0, 1),
                )
            # Rows: the local anchors; columns: every sample of the batch.
            match = (labels[:, None] == all_labels[None, :]).to(dtype)
            target = match / match.sum(dim=1, keepdim=True)
            log_target = torch.log(target + self.epsilon)
            scale = self.logit_scale.to(dtype)
            t2i = scale * (text @ all_image.transpose(-1, -2))
            i2t = scale * (image @ all_text.transpose(-1, -2))
            loss = 0.0
            for logits in (t2i, i2t):
                log_pred = F.log_softmax(logits, dim=-1)
                kl = log_pred.exp() * (log_pred - log_target)
                # Mean over the anchors, then over the parts (if any).
                loss = loss + batch.anchor_mean(kl.sum(dim=-1)).mean()
        return self.loss_weight * loss


__all__ = ['SDMLoss']
