"""``TokenizeCaption``: any transformers tokenizer from a local folder.

Tokenization runs in the data pipeline (the data loader workers), not in the
model. The tokenizer is loaded lazily, at the first caption a process sees, so
that building a dataset does not need the folder yet (SynthPedes writes its
tokenizer when it generates the data) and each worker loads it once.

Example:
    >>> tok = TokenizeCaption(tokenizer='data/synthpedes_small/tokenizer',
    ...                       max_length=32)
    >>> out = tok(dict(text='a man in a red coat'))
    >>> out['text_ids'].shape, out['text_mask'].dtype
    ((32,), dtype('int64'))
"""

import os
import os.path as osp
import re
from typing import Optional

import numpy as np
from mmcv.transforms import BaseTransform

from tbps_mm.registry import TRANSFORMS

__all__ = ['TokenizeCaption', 'load_local_tokenizer', 'TOKENIZER_FILES']

#: Files of which a tokenizer folder holds at least one (fast tokenizers
#: save ``tokenizer.json``; slow ones their vocabulary files).
TOKENIZER_FILES = (
    'tokenizer.json',
    'vocab.txt',
    'vocab.json',
    'merges.txt',
    'spiece.model',
    'sentencepiece.bpe.model',
    'tokenizer.model',
)


def load_local_tokenizer(folder: str):
    """Load a transformers tokenizer from a local folder, never downloading.

    Args:
        folder (str): A folder written by ``save_pretrained`` (or a model
            folder that holds the tokenizer files).

    Returns:
        transformers.PreTrainedTokenizerBase: The tokenizer.

    Raises:
        FileNotFoundError: The folder does not exist or holds no tokenizer.
        OSError: transformers cannot load the tokenizer from it.

    Example:
        >>> tokenizer = load_local_tokenizer('data/synthpedes_small/tokenizer')
    """
    if not osp.isdir(folder):
        raise FileNotFoundError(
            f'TokenizeCaption: tokenizer folder {folder!r} does not exist.'
        )
    present = set(os.listdir(folder))
    if not present.intersection(TOKENIZER_FILES):
        raise FileNotFoundError(
            f'TokenizeCaption: {folder!r} holds no tokenizer files (expected '
            f'one of {list(TOKENIZER_FILES)}, found {sorted(present)}); save '
            'one there with tokenizer.save_pretrained(folder).'
        )
    from transformers import AutoTokenizer  # heavy: import only when needed

    try:
        return AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except Exception as e:  # noqa: BLE001 - re-raised with the folder named
        raise OSError(
            f'TokenizeCaption: cannot load a tokenizer from {folder!r}: '
            f'{type(e).__name__}: {e}'
        ) from e


@TRANSFORMS.register_module()
class TokenizeCaption(BaseTransform):
    """Tokenize ``text`` into fixed-length ``text_ids`` and ``text_mask``.

    Items without ``text`` pass through unchanged. Captions longer than
    ``max_length`` tokens are truncated (the tokenizer keeps its special
    tokens, e.g. CLIP's end-of-text), shorter ones padded with the
    tokenizer's pad token.

    **Required keys:** ``text`` (optional).
    **Added keys:** ``text_ids``, ``text_mask`` (int64 arrays of length
    ``max_length``).

    Args:
        tokenizer (str): A local folder that
            ``AutoTokenizer.from_pretrained(folder, local_files_only=True)``
            loads: a CLIP or BERT model folder, or the SynthPedes tokenizer
            (``<data_root>/tokenizer``).
        max_length (int): Sequence length after padding / truncation.
            Defaults to 77 (CLIP's context length).
        lower_case (bool, optional): ``True`` lower-cases captions before
            tokenizing (the tokenizer's special tokens, e.g. ``[MASK]``, are
            kept as they are), ``False`` leaves them as they are; ``None`` (the
            default) leaves case to the tokenizer's own normaliser (CLIP and
            uncased BERT lower-case, cased BERT does not).

    Example:
        >>> TokenizeCaption('checkpoints/clip-vit-base-patch16', max_length=77)
        TokenizeCaption(tokenizer='checkpoints/clip-vit-base-patch16', ...)
    """

    def __init__(
        self,
        tokenizer: str,
        max_length: int = 77,
        lower_case: Optional[bool] = None,
    ) -> None:
        if not isinstance(tokenizer, str) or not tokenizer:
            raise TypeError(
                f'TokenizeCaption: tokenizer must be a folder path, got {tokenizer!r}.'
            )
        if not isinstance(max_length, int) or max_length < 2:
            raise ValueError(
                f'TokenizeCaption: max_length must be an int >= 2, got {max_length!r}.'
            )
        self.tokenizer_dir = tokenizer
        self.max_length = max_length
        self.lower_case = lower_case
        self._tokenizer = None
        self._special_pattern = None

    @property
    def tokenizer(self):
        """The tokenizer, loaded on first use in this process."""
        if self._tokenizer is None:
            tokenizer = load_local_tokenizer(self.tokenizer_dir)
            if tokenizer.pad_token is None:
                raise ValueError(
                    f'TokenizeCaption: the tokenizer in {self.tokenizer_dir!r} '
                    'has no pad token, which padding to max_length needs; set '
                    'one (tokenizer.pad_token = ...) and save it again.'
                )
            self._tokenizer = tokenizer
        return self._tokenizer

    def transform(self, results: dict) -> Optional[dict]:
        """Add ``text_ids`` and ``text_mask`` for ``results['text']``.

        Args:
            results (dict): The pipeline item.

        Returns:
            dict: The item with the token ids and attention mask.
        """
        text = results.get('text')
        if text is None:
            return results
        if self.lower_case:
            text = self._lower_keeping_special_tokens(text)
        encoded = self.tokenizer(
            text,
            max_length=self.max_length,
            padding='max_length',
            truncation=True,
            return_attention_mask=True,
        )
        results['text_ids'] = np.asarray(encoded['input_ids'], dtype=np.int64)
        results['text_mask'] = np.asarray(encoded['attention_mask'], dtype=np.int64)
        return results

    def _lower_keeping_special_tokens(self, text: str) -> str:
        """Lower-case ``text`` except the tokenizer's special tokens (an
        ``AugmentCaption`` '[MASK]' must stay '[MASK]')."""
        if self._special_pattern is None:
            specials = sorted(self.tokenizer.all_special_tokens, key=len, reverse=True)
            self._special_pattern = re.compile(
                '(' + '|'.join(re.escape(t) for t in specials) + ')'
            )
        parts = self._special_pattern.split(text)
        # re.split with one group: special tokens sit at the odd positions.
        return ''.join(p if i % 2 else p.lower() for i, p in enumerate(parts))

    def __getstate__(self) -> dict:
        # Pickled copies (spawned workers) load their own tokenizer.
        state = self.__dict__.copy()
        state['_tokenizer'] = state['_special_pattern'] = None
        return state

    def __repr__(self) -> str:
        return (
            f'{type(self).__name__}(tokenizer={self.tokenizer_dir!r}, '
            f'max_length={self.max_length}, lower_case={self.lower_case})'
        )
