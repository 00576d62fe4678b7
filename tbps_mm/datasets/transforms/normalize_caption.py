"""``NormalizeCaption``: whitespace normalisation, optional HTML unescaping and
lower-casing.

MMPretrain's ``CleanCaption`` is not used: it reads a caption every item must
have (gallery items have none) and removes punctuation and lower-cases by
default, which the CLIP and BERT tokenizers handle themselves.

Example:
    >>> NormalizeCaption(lower_case=True)(dict(text='  A man\\n in  RED. '))['text']
    'a man in red.'
"""

import html
from typing import Optional

from mmcv.transforms import BaseTransform

from tbps_mm.registry import TRANSFORMS

from .sample_description import describe_sample

__all__ = ['NormalizeCaption']


@TRANSFORMS.register_module()
class NormalizeCaption(BaseTransform):
    """Collapse runs of whitespace (spaces, tabs, newlines) into single spaces,
    strip the ends and optionally lower-case the caption.

    Items without ``text`` (gallery images) pass through unchanged. A caption
    that is empty after cleaning is an error naming the sample.

    **Required keys:** ``text`` (optional). **Modified keys:** ``text``.

    Args:
        lower_case (bool): Lower-case the caption. Leave it False when the
            tokenizer normalises case itself (CLIP, uncased BERT). Defaults
            to False.
        unescape_html (bool): Replace HTML entities (``&amp;`` -> ``&``),
            twice, as OpenAI CLIP's text cleaning does before its tokenizer
            (transformers' CLIP tokenizer does not). Defaults to False.

    Example:
        >>> NormalizeCaption()(dict(text='a  woman\\twith a bag'))['text']
        'a woman with a bag'
    """

    def __init__(self, lower_case: bool = False, unescape_html: bool = False) -> None:
        self.lower_case = lower_case
        self.unescape_html = unescape_html

    def transform(self, results: dict) -> Optional[dict]:
        """Clean ``results['text']`` in place.

        Args:
            results (dict): The pipeline item.

        Returns:
            dict: The item with the cleaned caption.
        """
        text = results.get('text')
        if text is None:
            return results
        if not isinstance(text, str):
            raise TypeError(
                f'NormalizeCaption: {describe_sample(results)}: the caption must be '
                f'a string, got {type(text).__name__}.'
            )
        if self.unescape_html:
            text = html.unescape(html.unescape(text))
        cleaned = ' '.join(text.split())
        if not cleaned:
            raise ValueError(
                f'NormalizeCaption: {describe_sample(results)}: the caption is '
                f'empty after cleaning (raw caption {text!r}).'
            )
        results['text'] = cleaned.lower() if self.lower_case else cleaned
        return results

    def __repr__(self) -> str:
        return (
            f'{type(self).__name__}(lower_case={self.lower_case}, '
            f'unescape_html={self.unescape_html})'
        )
