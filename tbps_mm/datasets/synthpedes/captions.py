"""The SynthPedes caption writer: CUHK-PEDES-style descriptions of one image.

Each caption names a random subset (about 60-85 %) of the identity's
attributes, weighted towards what annotators mention most (garment colours,
gender, bags), through a small template grammar with synonyms and varied
clause order: a subject sentence ("A slim woman with long black hair is
wearing ...") followed by pronoun sentences for the remaining parts, and now
and then a detail that does not identify the person (walking direction, the
street, a blurry picture). The two captions of an image name different
subsets, and no caption names everything.

Every word a caption can contain lives in :data:`GRAMMAR`, so the tokenizer
vocabulary is built from the grammar itself
(:func:`grammar_phrases`), not from generated captions: it is the same for
every seed and dataset size.

Written by hand: no library writes pedestrian descriptions.

Example:
    >>> import numpy as np
    >>> from tbps_mm.datasets.synthpedes.attributes import sample_identity
    >>> ident = sample_identity(np.random.default_rng(0))
    >>> caps, mentions = write_captions(ident, {'view': 'front', 'blur': 0.0},
    ...                                 np.random.default_rng(1))
    >>> len(caps), caps[0] != caps[1]
    (2, True)
"""

import re
from typing import Dict, Iterator, List, Sequence, Tuple

import numpy as np

__all__ = [
    'GRAMMAR',
    'caption_facts',
    'grammar_phrases',
    'processed_tokens',
    'write_captions',
]

_COLOUR_WORDS = {
    'black': ['black'],
    'white': ['white'],
    'grey': ['grey', 'gray'],
    'blue': ['blue'],
    'red': ['red'],
    'green': ['green'],
    'yellow': ['yellow'],
    'brown': ['brown'],
    'pink': ['pink'],
    'purple': ['purple', 'violet'],
    'orange': ['orange'],
    'beige': ['beige', 'tan', 'khaki'],
}

#: All phrase tables and sentence templates. ``{name}`` marks a slot.
GRAMMAR: Dict = {
    'articles': ['a', 'an', 'the', 'this'],
    'and': ['and', ','],
    'subjects': {
        'male': ['man', 'guy', 'young man', 'gentleman', 'male', 'boy'],
        'female': ['woman', 'lady', 'young woman', 'girl', 'female', 'young lady'],
        'none': ['person', 'pedestrian', 'individual'],
    },
    'pronouns': {
        'male': [('He', 'his')],
        'female': [('She', 'her')],
        'none': [('The person', 'their'), ('This pedestrian', 'their')],
    },
    'build_adjectives': {
        'slim': ['slim', 'thin', 'slender'],
        'heavy': ['heavy', 'heavyset', 'chubby', 'stocky'],
    },
    'build_phrases': {
        'slim': ['of slim build'],
        'average': ['of average build', 'of medium build'],
        'heavy': ['of heavy build', 'with a heavy build'],
    },
    'colours': _COLOUR_WORDS,
    'hair_colours': {
        'black': ['black', 'dark'],
        'brown': ['brown'],
        'blonde': ['blonde', 'blond'],
        'grey': ['grey', 'gray'],
        'red': ['red', 'ginger'],
    },
    'hair_lengths': {
        'short': ['short'],
        'long': ['long', 'shoulder-length'],
    },
    'hair_nouns': ['hair'],
    'hats': {
        'cap': ['cap', 'baseball cap'],
        'beanie': ['beanie', 'knit hat', 'woolly hat'],
        'sunhat': ['sun hat', 'wide-brimmed hat'],
        'generic': ['hat'],
    },
    'uppers': {
        't-shirt': ['t-shirt', 'tee shirt', 'tee'],
        'shirt': ['shirt', 'button-up shirt', 'button-down shirt'],
        'jacket': ['jacket', 'zip-up jacket'],
        'coat': ['coat', 'long coat', 'overcoat'],
        'sweater': ['sweater', 'jumper', 'pullover'],
        'hoodie': ['hoodie', 'hooded sweatshirt'],
        'generic': ['top'],
    },
    'sleeve_adjectives': {
        'short': ['short-sleeved', 'short sleeve'],
        'long': ['long-sleeved', 'long sleeve'],
    },
    'sleeve_phrases': {
        'short': ['with short sleeves'],
        'long': ['with long sleeves'],
    },
    'pattern_adjectives': {
        'striped': ['striped', 'stripy'],
        'checked': ['plaid', 'checked', 'checkered'],
        'logo': ['graphic', 'printed'],
        'plain': ['plain', 'solid'],
    },
    'pattern_phrases': {
        'striped': ['with stripes', 'with horizontal stripes'],
        'checked': ['with a plaid pattern', 'with a checked pattern'],
        'logo': [
            'with a logo on the front',
            'with a picture on the front',
            'with a print on the chest',
        ],
        'plain': ['with no pattern'],
    },
    'lowers': {
        'trousers': ['trousers', 'pants', 'slacks'],
        'jeans': ['jeans', 'denim jeans'],
        'shorts': ['shorts'],
        'skirt': ['skirt', 'knee-length skirt'],
        'generic': ['bottoms'],
    },
    'plural_lowers': ['trousers', 'jeans', 'shorts', 'generic'],
    'shoes': {
        'sneakers': ['sneakers', 'trainers', 'running shoes'],
        'shoes': ['shoes', 'leather shoes', 'dress shoes'],
        'boots': ['boots', 'ankle boots'],
        'sandals': ['sandals'],
        'generic': ['shoes'],
    },
    'pair_of': ['a pair of'],
    'carried': {
        'backpack': ['backpack', 'rucksack'],
        'shoulder bag': ['shoulder bag', 'messenger bag', 'crossbody bag'],
        'handbag': ['handbag', 'purse', 'hand bag'],
        'generic': ['bag'],
    },
    # Sentence templates.
    'wear_verbs': ['is wearing', 'wears', 'is dressed in', 'has on'],
    'subject_with': {
        'hair': ['with {hair}', 'who has {hair}'],
        'upper': ['in {upper}', 'wearing {upper}', 'dressed in {upper}'],
        'carried': ['carrying {carried}', 'with {carried}'],
        'hat': ['wearing {hat}', 'in {hat}'],
    },
    'hair_sentences': [
        '{pron} has {hair}.',
        '{poss} hair is {hair_adj}.',
        '{pron} has got {hair}.',
    ],
    'wear_sentences': [
        '{pron} is wearing {items}.',
        '{pron} wears {items}.',
        '{pron} is dressed in {items}.',
        '{pron} has on {items}.',
    ],
    'hat_sentences': ['{pron} is wearing {hat}.', '{pron} has {hat} on {poss} head.'],
    'shoe_sentences': [
        '{pron} is wearing {shoes}.',
        '{pron} has {shoes} on {poss} feet.',
        '{poss} shoes are {colour}.',
    ],
    'carried_sentences': {
        'any': [
            '{pron} is carrying {carried}.',
            '{pron} carries {carried}.',
            '{pron} has {carried} with {obj}.',
        ],
        'backpack': ['{pron} has {carried} on {poss} back.'],
        'shoulder bag': ['{pron} has {carried} over {poss} shoulder.'],
        'handbag': ['{pron} is holding {carried} in {poss} hand.'],
        'none': [
            '{pron} is not carrying anything.',
            '{pron} has nothing in {poss} hands.',
            '{pron} carries no bag.',
        ],
    },
    'objects': {'male': 'him', 'female': 'her', 'none': 'them'},
    'walking': ['is walking.', 'is walking down the street.'],
    'details': {
        'front': [
            '{pron} is walking toward the camera.',
            '{pron} is facing the camera.',
        ],
        'back': [
            '{pron} is walking away from the camera.',
            '{pron} is facing away from the camera.',
        ],
        'left': ['{pron} is walking to the left.'],
        'right': ['{pron} is walking to the right.'],
        'any': [
            '{pron} is walking down the street.',
            '{pron} seems to be in a hurry.',
            '{pron} is looking straight ahead.',
            '{pron} is walking outside on the sidewalk.',
        ],
        'blur': [
            'The picture is a little blurry.',
            'The image is slightly out of focus.',
        ],
    },
}

# How eagerly each fact is mentioned (relative weights).
_FACT_WEIGHTS = {
    'gender': 3.0,
    'build': 0.5,
    'hair_colour': 1.2,
    'hair_length': 1.2,
    'hat': 2.0,
    'hat_colour': 1.5,
    'upper_type': 1.5,
    'upper_colour': 3.0,
    'sleeves': 0.8,
    'pattern': 1.8,
    'lower_type': 1.5,
    'lower_colour': 3.0,
    'shoe_type': 0.8,
    'shoe_colour': 1.5,
    'carried': 2.0,
    'carried_colour': 1.8,
}

_TOKEN_RE = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")
_SLOT_RE = re.compile(r'\{[a-z_]+\}')


def grammar_phrases() -> Iterator[str]:
    """Yield every literal text fragment of the grammar (slots removed).

    Returns:
        Iterator[str]: Fragments; their words and punctuation are the whole
        vocabulary a caption can use.

    Example:
        >>> 'backpack' in ' '.join(grammar_phrases())
        True
    """

    def walk(node):
        if isinstance(node, str):
            yield _SLOT_RE.sub(' ', node)
        elif isinstance(node, dict):
            for value in node.values():
                yield from walk(value)
        elif isinstance(node, (list, tuple)):
            for value in node:
                yield from walk(value)

    yield from walk(GRAMMAR)


def processed_tokens(caption: str) -> List[str]:
    """Lower-cased word tokens of a caption, as CUHK-PEDES stores them.

    Args:
        caption (str): The caption.

    Returns:
        list[str]: Words (hyphenated words stay whole), punctuation dropped.

    Example:
        >>> processed_tokens('A man in a white T-shirt.')
        ['a', 'man', 'in', 'a', 'white', 't-shirt']
    """
    return _TOKEN_RE.findall(caption.lower())


def caption_facts(identity: Dict) -> List[str]:
    """The attributes of ``identity`` that a caption can name.

    Args:
        identity (dict): A SynthPedes identity.

    Returns:
        list[str]: Attribute names; hat and carried colours only when the
        person has a hat / carried item.

    Example:
        >>> 'hat_colour' in caption_facts({'hat': 'none', 'carried': 'none'})
        False
    """
    facts = []
    for name in _FACT_WEIGHTS:
        if name == 'hat' or name == 'hat_colour':
            if identity.get('hat', 'none') == 'none':
                continue
        if name == 'carried_colour' and identity.get('carried', 'none') == 'none':
            continue
        facts.append(name)
    return facts


class _Writer:
    """Writes one caption for one identity and one chosen set of facts."""

    def __init__(
        self, identity: Dict, facts: Sequence[str], rng: np.random.Generator
    ) -> None:
        self.ident = identity
        self.facts = set(facts)
        self.rng = rng
        gender = identity['gender'] if 'gender' in self.facts else 'none'
        self.gender = gender
        pron, poss = self.pick(GRAMMAR['pronouns'][gender])
        self.pron, self.poss = pron, poss
        self.obj = GRAMMAR['objects'][gender]

    def pick(self, options: Sequence):
        # rng.random() is cheaper than rng.integers() per call
        return options[int(self.rng.random() * len(options))]

    def coin(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    @staticmethod
    def article(phrase: str) -> str:
        return ('an ' if phrase[0] in 'aeiou' else 'a ') + phrase

    # Noun phrases -----------------------------------------------------
    def colour(self, attr: str) -> List[str]:
        if attr not in self.facts:
            return []
        return [self.pick(GRAMMAR['colours'][self.ident[attr]])]

    def hair(self) -> str:
        words = []
        if 'hair_length' in self.facts:
            words.append(self.pick(GRAMMAR['hair_lengths'][self.ident['hair_length']]))
        if 'hair_colour' in self.facts:
            words.append(self.pick(GRAMMAR['hair_colours'][self.ident['hair_colour']]))
        return ' '.join(words + GRAMMAR['hair_nouns'])

    def hat(self) -> str:
        kind = self.ident['hat'] if 'hat' in self.facts else 'generic'
        words = self.colour('hat_colour') + [self.pick(GRAMMAR['hats'][kind])]
        return self.article(' '.join(words))

    def upper(self) -> str:
        kind = self.ident['upper_type'] if 'upper_type' in self.facts else 'generic'
        pre = self.colour('upper_colour')
        post = []
        if 'pattern' in self.facts:
            pattern = self.ident['pattern']
            if self.coin(0.6):  # 'a plain black' or 'a black plain' top
                pre.insert(
                    int(self.rng.integers(len(pre) + 1)),
                    self.pick(GRAMMAR['pattern_adjectives'][pattern]),
                )
            else:
                post.append(self.pick(GRAMMAR['pattern_phrases'][pattern]))
        if 'sleeves' in self.facts:
            sleeves = self.ident['sleeves']
            if self.coin(0.5):
                pre.append(self.pick(GRAMMAR['sleeve_adjectives'][sleeves]))
            else:
                post.insert(0, self.pick(GRAMMAR['sleeve_phrases'][sleeves]))
        noun = self.pick(GRAMMAR['uppers'][kind])
        phrase = self.article(' '.join(pre + [noun]))
        if post:
            phrase += ' ' + ' and '.join(
                [post[0]] + [p[len('with ') :] for p in post[1:]]
            )
        return phrase

    def lower(self) -> str:
        kind = self.ident['lower_type'] if 'lower_type' in self.facts else 'generic'
        words = ' '.join(
            self.colour('lower_colour') + [self.pick(GRAMMAR['lowers'][kind])]
        )
        if kind not in GRAMMAR['plural_lowers']:
            return self.article(words)
        if self.coin(0.25):
            return GRAMMAR['pair_of'][0] + ' ' + words
        return words

    def shoes(self) -> str:
        kind = self.ident['shoe_type'] if 'shoe_type' in self.facts else 'generic'
        words = ' '.join(
            self.colour('shoe_colour') + [self.pick(GRAMMAR['shoes'][kind])]
        )
        if self.coin(0.2):
            return GRAMMAR['pair_of'][0] + ' ' + words
        return words

    def carried(self) -> str:
        kind = self.ident['carried'] if 'carried' in self.facts else 'generic'
        words = self.colour('carried_colour') + [self.pick(GRAMMAR['carried'][kind])]
        return self.article(' '.join(words))

    # Sentences ----------------------------------------------------------
    def fill(self, template: str, **slots: str) -> str:
        slots.setdefault('pron', self.pron)
        slots.setdefault('poss', self.poss)
        slots.setdefault('obj', self.obj)
        text = template.format(**slots)
        return text[0].upper() + text[1:]

    def join(self, items: List[str]) -> str:
        if len(items) == 1:
            return items[0]
        comma = GRAMMAR['and'][1]
        return (
            (comma + ' ').join(items[:-1]) + ' ' + GRAMMAR['and'][0] + (' ' + items[-1])
        )

    def subject(self) -> str:
        build = self.ident['build'] if 'build' in self.facts else None
        noun = self.pick(GRAMMAR['subjects'][self.gender])
        if build in GRAMMAR['build_adjectives'] and self.coin(0.7):
            noun = self.pick(GRAMMAR['build_adjectives'][build]) + ' ' + noun
            build = None
        first = self.article(noun) if self.coin(0.8) else 'the ' + noun
        if build is not None:
            first += ' ' + self.pick(GRAMMAR['build_phrases'][build])
        return first

    def write(self, info: Dict) -> str:
        f = self.facts
        groups = {
            'hair': bool(f & {'hair_colour', 'hair_length'}),
            'hat': bool(f & {'hat', 'hat_colour'}),
            'upper': bool(f & {'upper_type', 'upper_colour', 'sleeves', 'pattern'}),
            'lower': bool(f & {'lower_type', 'lower_colour'}),
            'shoes': bool(f & {'shoe_type', 'shoe_colour'}),
            'carried': bool(f & {'carried', 'carried_colour'}),
        }
        phrases = {
            'hair': self.hair,
            'hat': self.hat,
            'upper': self.upper,
            'lower': self.lower,
            'shoes': self.shoes,
            'carried': self.carried,
        }
        pending = [g for g, on in groups.items() if on]
        sentence = self.subject()
        # one group may attach to the subject ("A woman with long hair ...")
        attachable = [g for g in pending if g in GRAMMAR['subject_with']]
        if attachable and self.coin(0.65):
            group = self.pick(attachable)
            # "A man carrying nothing" reads oddly: absence gets a sentence
            if not (group == 'carried' and self.ident['carried'] == 'none'):
                template = self.pick(GRAMMAR['subject_with'][group])
                sentence += ' ' + template.format(**{group: phrases[group]()})
                pending.remove(group)
        worn = [g for g in pending if g in ('upper', 'lower', 'shoes')]
        if worn and (len(worn) > 1 or self.coin(0.8)):
            if self.coin(0.3):
                worn = [worn[i] for i in self.rng.permutation(len(worn))]
            items = [phrases[g]() for g in worn]
            sentence += (
                ' ' + self.pick(GRAMMAR['wear_verbs']) + ' ' + (self.join(items)) + '.'
            )
            pending = [g for g in pending if g not in worn]
        else:
            sentence += ' ' + self.pick(GRAMMAR['walking'])
        sentences = [sentence[0].upper() + sentence[1:]]
        order = [pending[i] for i in self.rng.permutation(len(pending))]
        for group in order:
            sentences.append(self.group_sentence(group, phrases[group]))
        sentences += self.details(info)
        return ' '.join(sentences)

    def group_sentence(self, group: str, phrase) -> str:
        if group == 'hair':
            template = self.pick(GRAMMAR['hair_sentences'])
            hair = phrase()
            # 'long black hair' -> 'long and black' for '... hair is {}.'
            adjectives = hair[: -len(' hair')].replace(' ', ' and ', 1)
            return self.fill(template, hair=hair, hair_adj=adjectives)
        if group == 'hat':
            return self.fill(self.pick(GRAMMAR['hat_sentences']), hat=phrase())
        if group == 'shoes':
            templates = GRAMMAR['shoe_sentences']
            if 'shoe_colour' not in self.facts or 'shoe_type' in self.facts:
                templates = templates[:2]
            template = self.pick(templates)
            return self.fill(
                template, shoes=phrase(), colour=' '.join(self.colour('shoe_colour'))
            )
        if group == 'carried':
            table = GRAMMAR['carried_sentences']
            if self.ident['carried'] == 'none':
                return self.fill(self.pick(table['none']))
            templates = list(table['any'])
            if 'carried' in self.facts:
                templates += table[self.ident['carried']]
            return self.fill(self.pick(templates), carried=phrase())
        return self.fill(self.pick(GRAMMAR['wear_sentences']), items=phrase())

    def details(self, info: Dict) -> List[str]:
        if not self.coin(0.25):
            return []
        table = GRAMMAR['details']
        options = list(table['any']) + list(table.get(info.get('view'), []))
        if info.get('blur', 0.0) > 0.5:
            options += table['blur']
        return [self.fill(self.pick(options))]


def _choose_facts(
    facts: List[str], identity: Dict, rng: np.random.Generator
) -> List[str]:
    weights = np.asarray([_FACT_WEIGHTS[f] for f in facts], dtype=np.float64)
    for i, name in enumerate(facts):
        if name == 'pattern' and identity['pattern'] == 'plain':
            weights[i] = 0.4
        if name == 'carried' and identity['carried'] == 'none':
            weights[i] = 0.8
    n = len(facts)
    k = int(round(rng.uniform(0.6, 0.85) * n))
    k = min(max(k, 1), n - 1)
    # Weighted sampling without replacement (Efraimidis-Spirakis): the k
    # largest u ** (1 / w) keys; much cheaper than rng.choice(p=...).
    keys = rng.random(n) ** (1.0 / weights)
    index = np.argsort(-keys, kind='stable')[:k]
    return [facts[i] for i in sorted(index)]


def write_captions(
    identity: Dict, info: Dict, rng: np.random.Generator, num: int = 2
) -> Tuple[List[str], List[List[str]]]:
    """Write ``num`` distinct captions of one image.

    Args:
        identity (dict): The person's identity.
        info (dict): The image's nuisances from
            :func:`~tbps_mm.datasets.synthpedes.renderer.render_person`
            (``view`` and ``blur`` may be mentioned).
        rng (numpy.random.Generator): The captions' random stream.
        num (int): Number of captions. Defaults to 2.

    Returns:
        tuple[list[str], list[list[str]]]: The captions and, for each, the
        attribute names it mentions (no caption mentions all of them, and the
        captions' subsets differ).

    Example:
        >>> import numpy as np
        >>> from tbps_mm.datasets.synthpedes.attributes import sample_identity
        >>> ident = sample_identity(np.random.default_rng(2))
        >>> _, mentions = write_captions(ident, {'view': 'back'},
        ...                              np.random.default_rng(0))
        >>> mentions[0] != mentions[1]
        True
    """
    facts = caption_facts(identity)
    captions: List[str] = []
    mentions: List[List[str]] = []
    for _ in range(num):
        for _attempt in range(20):
            chosen = _choose_facts(facts, identity, rng)
            if chosen not in mentions:
                break
        else:  # vanishingly rare: vary the last subset by one fact
            missing = [f for f in facts if f not in chosen]
            chosen = sorted(chosen[1:] + missing[:1], key=facts.index)
        for _attempt in range(20):
            caption = _Writer(identity, chosen, rng).write(info)
            if caption not in captions:
                break
        captions.append(caption)
        mentions.append(chosen)
    return captions, mentions
