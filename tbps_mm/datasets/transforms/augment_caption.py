"""``AugmentCaption``: random word masking and deletion before tokenization.

Written by hand: neither MMPretrain nor transformers offers a word-level caption
augmentation that works with any tokenizer (masking after tokenization would
depend on the tokenizer's mask id, which CLIP's BPE does not have).

Example:
    >>> import numpy as np
    >>> np.random.seed(0)
    >>> aug = AugmentCaption(mask_prob=0.5, delete_prob=0.0)
    >>> aug(dict(text='a man in a red coat'))['text']
    'a man in a [MASK] coat'
"""

from typing import Optional

import numpy as np
from mmcv.transforms import BaseTransform

from tbps_mm.registry import TRANSFORMS

from .sample_description import describe_sample

__all__ = ['AugmentCaption']


@TRANSFORMS.register_module()
class AugmentCaption(BaseTransform):
    """Replace words by ``mask_token`` or delete them, each independently.

    Each word of the (whitespace-split) caption is deleted with probability
    ``delete_prob``, otherwise replaced by ``mask_token`` with probability
    ``mask_prob``. At least one original word always survives: if the draw
    would delete or mask every word, one of them, chosen at random, is kept
    as it was. Randomness comes from NumPy's global generator, which MMEngine
    seeds per data loader worker. Items without ``text`` pass through.

    **Required keys:** ``text`` (optional). **Modified keys:** ``text``.

    Args:
        mask_prob (float): Probability to mask a word. Defaults to 0.1.
        delete_prob (float): Probability to delete a word. Defaults to 0.05.
        mask_token (str): The string a masked word becomes; use the
            tokenizer's mask token where it has one (``'[MASK]'`` for BERT
            WordPiece and the SynthPedes tokenizer). Defaults to ``'[MASK]'``.

    Example:
        >>> aug = AugmentCaption(mask_prob=0.0, delete_prob=1.0)
        >>> len(aug(dict(text='a man in a red coat'))['text'].split())
        1
    """

    def __init__(
        self,
        mask_prob: float = 0.1,
        delete_prob: float = 0.05,
        mask_token: str = '[MASK]',
    ) -> None:
        for name, p in (('mask_prob', mask_prob), ('delete_prob', delete_prob)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f'AugmentCaption: {name} must be in [0, 1], got {p}.')
        if mask_prob + delete_prob > 1.0:
            raise ValueError(
                'AugmentCaption: mask_prob + delete_prob must not exceed 1, got '
                f'{mask_prob} + {delete_prob}.'
            )
        if not isinstance(mask_token, str) or not mask_token.strip():
            raise ValueError('AugmentCaption: mask_token must be a non-empty string.')
        self.mask_prob = mask_prob
        self.delete_prob = delete_prob
        self.mask_token = mask_token

    def transform(self, results: dict) -> Optional[dict]:
        """Augment ``results['text']``.

        Args:
            results (dict): The pipeline item.

        Returns:
            dict: The item with the augmented caption.
        """
        text = results.get('text')
        if text is None:
            return results
        words = np.array(text.split(), dtype=object)
        if words.size == 0:
            raise ValueError(
                f'AugmentCaption: {describe_sample(results)}: the caption is empty.'
            )
        draw = np.random.rand(words.size)
        delete = draw < self.delete_prob
        mask = ~delete & (draw < self.delete_prob + self.mask_prob)
        if (delete | mask).all():
            # Keep one original word so that the caption still says something.
            keep = np.random.randint(words.size)
            delete[keep] = mask[keep] = False
        words[mask] = self.mask_token
        results['text'] = ' '.join(words[~delete].tolist())
        return results

    def __repr__(self) -> str:
        return (
            f'{type(self).__name__}(mask_prob={self.mask_prob}, '
            f'delete_prob={self.delete_prob}, mask_token={self.mask_token!r})'
        )
