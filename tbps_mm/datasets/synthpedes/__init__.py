"""SynthPedes: the procedural pedestrian dataset that tbps_mm renders itself.

``generate_synthpedes`` writes a dataset folder in the CUHK-PEDES layout
(``imgs/`` + ``reid_raw.json``) plus part masks, the attribute table, a
word-level tokenizer and a meta file; see docs/synthpedes.md. The modules:
``attributes`` (vocabulary, long-tailed priors, identity sampling),
``renderer`` (person crops and part masks), ``captions`` (the caption grammar),
``tokenizer`` (the grammar's tokenizer), ``generator`` (the folder) and
``video`` (street-scene videos of SynthPedes people with MOT ground truth).

Example:
    >>> from tbps_mm.datasets.synthpedes import SIZES, generate_synthpedes
    >>> sorted(SIZES)
    ['large', 'small', 'tiny']
"""

from .attributes import (
    ATTRIBUTE_PARTS,
    ATTRIBUTE_VALUES,
    COLOURS,
    PART_NAMES,
    attribute_frequencies,
    sample_identity,
)
from .captions import GRAMMAR, processed_tokens, write_captions
from .generator import (
    GENERATOR_VERSION,
    META_FILE,
    SIZES,
    generate_synthpedes,
    read_synthpedes_meta,
    split_id_counts,
)
from .renderer import VIEWS, render_person
from .tokenizer import (
    SPECIAL_TOKENS,
    build_synthpedes_tokenizer,
    make_synthpedes_tokenizer,
    synthpedes_vocab,
)
from .video import (
    VIDEO_GENERATOR_VERSION,
    VIDEO_SIZES,
    generate_synthpedes_videos,
    read_synthpedes_videos_meta,
)

__all__ = [
    'SIZES',
    'GENERATOR_VERSION',
    'META_FILE',
    'generate_synthpedes',
    'read_synthpedes_meta',
    'split_id_counts',
    'build_synthpedes_tokenizer',
    'make_synthpedes_tokenizer',
    'synthpedes_vocab',
    'SPECIAL_TOKENS',
    'ATTRIBUTE_PARTS',
    'ATTRIBUTE_VALUES',
    'COLOURS',
    'PART_NAMES',
    'attribute_frequencies',
    'sample_identity',
    'render_person',
    'VIEWS',
    'GRAMMAR',
    'write_captions',
    'processed_tokens',
    'VIDEO_GENERATOR_VERSION',
    'VIDEO_SIZES',
    'generate_synthpedes_videos',
    'read_synthpedes_videos_meta',
]
