"""``IDLoss``: identity classification shared by both modalities.

One linear classifier over the training identities scores the coarse image
and text embeddings; the loss is the mean of the two cross-entropies (IRRA's
ID loss). The classifier is part of the model's state dict, so a checkpoint's
identity count must match the config's ``num_classes`` (the model's load
checks name the key when it does not).
"""

import torch.nn.functional as F
from torch import Tensor, nn

from tbps_mm.registry import MODELS


@MODELS.register_module()
class IDLoss(nn.Module):
    """Shared linear ID classifier on image and text coarse embeddings.

    Args:
        in_channels (int): Embedding size D.
        num_classes (int): Number of training identities; labels must lie in
            ``[0, num_classes)``.
        loss_weight (float): Multiplier of the loss. Defaults to 1.0.

    Example:
        >>> import torch
        >>> loss = IDLoss(8, num_classes=3)
        >>> loss(torch.randn(4, 8), torch.randn(4, 8), torch.tensor([0, 0, 1, 2]))
        tensor(...)
    """

    #: What the retriever feeds this loss: the coarse embeddings.
    input_key = 'embed'

    def __init__(
        self, in_channels: int, num_classes: int, loss_weight: float = 1.0
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f'num_classes must be >= 1, got {num_classes}')
        self.num_classes = num_classes
        self.loss_weight = loss_weight
        self.classifier = nn.Linear(in_channels, num_classes)
        # IRRA's initialisation: small weights so early logits are near zero.
        nn.init.normal_(self.classifier.weight, std=0.001)
        nn.init.zeros_(self.classifier.bias)

    def forward(
        self, image_embeds: Tensor, text_embeds: Tensor, labels: Tensor
    ) -> Tensor:
        """Compute the loss.

        Args:
            image_embeds (Tensor): (B, D) image coarse embeddings.
            text_embeds (Tensor): (B, D) text coarse embeddings.
            labels (Tensor): (B,) person labels in ``[0, num_classes)``.

        Returns:
            Tensor: The scalar loss.
        """
        labels = labels.view(-1)
        if labels.numel() and (
            int(labels.max()) >= self.num_classes or int(labels.min()) < 0
        ):
            raise ValueError(
                f'IDLoss got label {int(labels.max())} (min {int(labels.min())}) '
                f'but was built with num_classes={self.num_classes}: set the ID '
                "loss's num_classes to the number of training identities of the "
                'dataset'
            )
        loss = F.cross_entropy(self.classifier(image_embeds), labels) + F.cross_entropy(
            self.classifier(text_embeds), labels
        )
        return self.loss_weight * loss / 2


__all__ = ['IDLoss']
