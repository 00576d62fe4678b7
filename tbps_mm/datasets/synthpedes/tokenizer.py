"""The SynthPedes tokenizer: a word-level vocabulary of the caption grammar.

The vocabulary is every word and punctuation mark the caption grammar
(:data:`~tbps_mm.datasets.synthpedes.captions.GRAMMAR`) can produce, plus the
ASCII punctuation, in sorted order after BERT-style special tokens
(``[PAD]`` = 0, ``[UNK]`` = 1, ``[CLS]`` = 2, ``[SEP]`` = 3, ``[MASK]`` = 4). It
depends on the grammar only, never on generated captions, so it is the same
for every seed and dataset size and a model trained on one SynthPedes set reads
the captions of any other.

The tokenizer is a ``tokenizers`` ``WordLevel`` model with a lower-casing BERT
normaliser, BERT's whitespace-and-punctuation pre-tokenizer and a
``[CLS] ... [SEP]`` post-processor; the special tokens are registered as added
tokens, so a ``[MASK]`` typed into a caption (by caption augmentation) stays
one token. It is saved as ``tokenizer.json`` + ``tokenizer_config.json``
(``tokenizer_class: PreTrainedTokenizerFast``, readable by transformers 4 and
5), so ``transformers.AutoTokenizer.from_pretrained(folder)`` loads it offline.

Built with the ``tokenizers`` library; only the config file is written by hand
(it is four keys, and writing it directly keeps the output independent of the
installed transformers version).

Example:
    >>> import tempfile
    >>> from transformers import AutoTokenizer
    >>> folder = build_synthpedes_tokenizer(tempfile.mkdtemp())
    >>> tok = AutoTokenizer.from_pretrained(folder)
    >>> tok.convert_ids_to_tokens(tok('A man.')['input_ids'])
    ['[CLS]', 'a', 'man', '.', '[SEP]']
"""

import json
import os
import os.path as osp
import string
from typing import Dict, List

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

from .captions import grammar_phrases

__all__ = [
    'SPECIAL_TOKENS',
    'synthpedes_vocab',
    'make_synthpedes_tokenizer',
    'build_synthpedes_tokenizer',
]

#: BERT-style special tokens, in id order.
SPECIAL_TOKENS: List[str] = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]']

#: Longest input the saved tokenizer accepts by default.
MODEL_MAX_LENGTH = 512


def synthpedes_vocab() -> Dict[str, int]:
    """The word-to-id map of the SynthPedes tokenizer.

    Returns:
        dict[str, int]: Special tokens first (``[PAD]`` = 0), then every
        pre-tokenized, lower-cased word of the caption grammar and the ASCII
        punctuation, sorted.

    Example:
        >>> vocab = synthpedes_vocab()
        >>> vocab['[PAD]'], 'backpack' in vocab
        (0, True)
    """
    pre = pre_tokenizers.BertPreTokenizer()
    words = set(string.punctuation)
    for phrase in grammar_phrases():
        words.update(piece for piece, _ in pre.pre_tokenize_str(phrase.lower()))
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for word in sorted(words):
        vocab[word] = len(vocab)
    return vocab


def make_synthpedes_tokenizer() -> Tokenizer:
    """Build the SynthPedes ``tokenizers.Tokenizer`` in memory.

    Returns:
        tokenizers.Tokenizer: The word-level tokenizer (see module docstring).

    Example:
        >>> tok = make_synthpedes_tokenizer()
        >>> tok.encode('A red coat').tokens
        ['[CLS]', 'a', 'red', 'coat', '[SEP]']
    """
    vocab = synthpedes_vocab()
    tok = Tokenizer(models.WordLevel(vocab, unk_token='[UNK]'))
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=False, lowercase=True
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single='[CLS] $A [SEP]',
        pair='[CLS] $A [SEP] $B:1 [SEP]:1',
        special_tokens=[('[CLS]', vocab['[CLS]']), ('[SEP]', vocab['[SEP]'])],
    )
    tok.add_special_tokens(SPECIAL_TOKENS)
    return tok


def build_synthpedes_tokenizer(out_dir: str) -> str:
    """Write the SynthPedes tokenizer into a folder transformers can load.

    Args:
        out_dir (str): The tokenizer folder (created if missing); it receives
            ``tokenizer.json`` and ``tokenizer_config.json``.

    Returns:
        str: ``out_dir``, to pass to ``AutoTokenizer.from_pretrained``.

    Example:
        >>> import os, tempfile
        >>> folder = build_synthpedes_tokenizer(tempfile.mkdtemp())
        >>> sorted(os.listdir(folder))
        ['tokenizer.json', 'tokenizer_config.json']
    """
    os.makedirs(out_dir, exist_ok=True)
    make_synthpedes_tokenizer().save(osp.join(out_dir, 'tokenizer.json'), pretty=True)
    config = dict(
        tokenizer_class='PreTrainedTokenizerFast',
        unk_token='[UNK]',
        pad_token='[PAD]',
        cls_token='[CLS]',
        sep_token='[SEP]',
        mask_token='[MASK]',
        do_lower_case=True,
        model_max_length=MODEL_MAX_LENGTH,
        model_input_names=['input_ids', 'attention_mask'],
        clean_up_tokenization_spaces=False,
    )
    with open(osp.join(out_dir, 'tokenizer_config.json'), 'w', encoding='utf-8') as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write('\n')
    return out_dir
