"""SynthPedes identities: the attribute vocabulary, its long-tailed frequencies and
the sampler that draws one identity.

An identity is a set of part attributes (head, upper body, lower body, feet,
carried item) plus gender and build. Every categorical attribute has a skewed
prior (Zipf-like for colours, hand-set for garment types), so some parts are
worn by many people (black trousers, black hair) and some by few (orange shoes):
the commonality that the commonality-based margin ranking loss is about is real
and measurable. :func:`attribute_frequencies` returns the exact marginal prior of
every value (conditionals such as skirts only for women are summed out).

Written by hand: no library models pedestrian appearance. Only numpy is used.

Example:
    >>> import numpy as np
    >>> from tbps_mm.datasets.synthpedes.attributes import sample_identity
    >>> identity = sample_identity(np.random.default_rng(0))
    >>> identity['upper_colour'] in COLOURS
    True
"""

from typing import Dict, List, Optional, Tuple

import numpy as np

__all__ = [
    'COLOURS',
    'HAIR_COLOURS',
    'SKIN_TONES',
    'ATTRIBUTE_PARTS',
    'ATTRIBUTE_VALUES',
    'PART_NAMES',
    'BODY_PARTS',
    'attribute_frequencies',
    'family_member',
    'part_attributes',
    'part_value_distribution',
    'sample_identity',
]

#: Named colours with their RGB prototypes. Prototypes are far apart in RGB so
#: that a colour stays recognisable at 128x48 under lighting and colour casts.
COLOURS: Dict[str, Tuple[int, int, int]] = {
    'black': (30, 30, 34),
    'white': (236, 236, 230),
    'grey': (128, 128, 132),
    'blue': (34, 78, 196),
    'red': (204, 30, 34),
    'green': (34, 142, 56),
    'yellow': (238, 208, 36),
    'brown': (116, 70, 36),
    'pink': (240, 138, 182),
    'purple': (116, 46, 164),
    'orange': (242, 128, 24),
    'beige': (206, 184, 140),
}

HAIR_COLOURS: Dict[str, Tuple[int, int, int]] = {
    'black': (24, 20, 20),
    'brown': (96, 58, 30),
    'blonde': (222, 188, 104),
    'grey': (168, 168, 168),
    'red': (176, 64, 28),
}

#: Skin tones are nuisance (never captioned), so they are not attributes.
SKIN_TONES: Tuple[Tuple[int, int, int], ...] = (
    (246, 214, 188),
    (232, 188, 150),
    (200, 150, 110),
    (150, 100, 68),
    (100, 66, 44),
)

#: Mask part index of each body part (0 is background).
PART_NAMES: Tuple[str, ...] = (
    'background',
    'head',
    'upper',
    'lower',
    'feet',
    'carried',
)

#: The body part each attribute describes ('body' for whole-person attributes).
ATTRIBUTE_PARTS: Dict[str, str] = {
    'gender': 'body',
    'build': 'body',
    'hair_colour': 'head',
    'hair_length': 'head',
    'hat': 'head',
    'hat_colour': 'head',
    'upper_type': 'upper',
    'upper_colour': 'upper',
    'sleeves': 'upper',
    'pattern': 'upper',
    'lower_type': 'lower',
    'lower_colour': 'lower',
    'shoe_type': 'feet',
    'shoe_colour': 'feet',
    'carried': 'carried',
    'carried_colour': 'carried',
}

#: The body parts that identities of a family differ in: every mask part but
#: the background, each with the attributes of :data:`ATTRIBUTE_PARTS` that
#: describe it ('body' attributes, gender and build, belong to no part).
BODY_PARTS: Tuple[str, ...] = PART_NAMES[1:]


def part_attributes(part: str) -> Tuple[str, ...]:
    """The attributes that make up one body part, in :data:`ATTRIBUTE_PARTS` order.

    Args:
        part (str): One of :data:`BODY_PARTS`.

    Returns:
        tuple[str, ...]: e.g. ``('lower_type', 'lower_colour')`` for ``'lower'``.

    Example:
        >>> part_attributes('feet')
        ('shoe_type', 'shoe_colour')
    """
    if part not in BODY_PARTS:
        raise ValueError(f'unknown body part {part!r}; choose one of {BODY_PARTS}')
    return tuple(name for name, p in ATTRIBUTE_PARTS.items() if p == part)


def _zipf(order: List[str], exponent: float) -> Dict[str, float]:
    """Zipf-like probabilities over ``order`` (most common first)."""
    weights = 1.0 / np.arange(1, len(order) + 1, dtype=np.float64) ** exponent
    weights /= weights.sum()
    return {name: float(w) for name, w in zip(order, weights)}


# Colour priors differ per part: black trousers are the commonest lower
# garment, white the second commonest shoe, and so on.
_COLOUR_PRIORS: Dict[str, Dict[str, float]] = {
    'upper_colour': _zipf(
        [
            'black',
            'white',
            'grey',
            'blue',
            'red',
            'pink',
            'green',
            'yellow',
            'purple',
            'brown',
            'orange',
            'beige',
        ],
        1.05,
    ),
    'lower_colour': _zipf(
        [
            'black',
            'blue',
            'grey',
            'white',
            'brown',
            'beige',
            'red',
            'green',
            'pink',
            'purple',
            'yellow',
            'orange',
        ],
        1.3,
    ),
    'shoe_colour': _zipf(
        [
            'black',
            'white',
            'grey',
            'brown',
            'blue',
            'red',
            'pink',
            'beige',
            'green',
            'yellow',
            'purple',
            'orange',
        ],
        1.2,
    ),
    'carried_colour': _zipf(
        [
            'black',
            'brown',
            'grey',
            'blue',
            'red',
            'white',
            'pink',
            'green',
            'purple',
            'beige',
            'yellow',
            'orange',
        ],
        1.1,
    ),
    'hat_colour': _zipf(
        [
            'black',
            'white',
            'blue',
            'red',
            'grey',
            'beige',
            'green',
            'yellow',
            'pink',
            'brown',
            'purple',
            'orange',
        ],
        1.1,
    ),
}

# Priors of the other categorical attributes. Entries keyed by a gender are
# conditional on it; entries keyed by an upper type are conditional on that.
_PRIORS: Dict[str, Dict] = {
    'gender': {'male': 0.55, 'female': 0.45},
    'build': {'average': 0.6, 'slim': 0.25, 'heavy': 0.15},
    'hair_colour': {
        'black': 0.6,
        'brown': 0.24,
        'blonde': 0.08,
        'grey': 0.05,
        'red': 0.03,
    },
    'hair_length': {
        'male': {'short': 0.9, 'long': 0.1},
        'female': {'long': 0.75, 'short': 0.25},
    },
    'hat': {'none': 0.78, 'cap': 0.12, 'beanie': 0.06, 'sunhat': 0.04},
    'upper_type': {
        't-shirt': 0.34,
        'jacket': 0.22,
        'shirt': 0.16,
        'coat': 0.12,
        'sweater': 0.1,
        'hoodie': 0.06,
    },
    'sleeves': {
        't-shirt': {'short': 0.92, 'long': 0.08},
        'shirt': {'long': 0.6, 'short': 0.4},
        'jacket': {'long': 1.0},
        'coat': {'long': 1.0},
        'sweater': {'long': 1.0},
        'hoodie': {'long': 1.0},
    },
    'pattern': {'plain': 0.7, 'striped': 0.14, 'checked': 0.08, 'logo': 0.08},
    'lower_type': {
        'male': {'trousers': 0.5, 'jeans': 0.33, 'shorts': 0.17},
        'female': {'trousers': 0.3, 'jeans': 0.22, 'skirt': 0.36, 'shorts': 0.12},
    },
    'shoe_type': {'sneakers': 0.5, 'shoes': 0.3, 'boots': 0.15, 'sandals': 0.05},
    'carried': {'none': 0.4, 'backpack': 0.3, 'shoulder bag': 0.15, 'handbag': 0.15},
}
_PRIORS.update(_COLOUR_PRIORS)

#: Every attribute's possible values, in a fixed order.
ATTRIBUTE_VALUES: Dict[str, Tuple[str, ...]] = {}
for _name in ATTRIBUTE_PARTS:
    _table = _PRIORS[_name]
    _first = next(iter(_table.values()))
    if isinstance(_first, dict):  # conditional table: union of the values
        _values: List[str] = []
        for _sub in _table.values():
            _values += [v for v in _sub if v not in _values]
        ATTRIBUTE_VALUES[_name] = tuple(_values)
    else:
        ATTRIBUTE_VALUES[_name] = tuple(_table)


def attribute_frequencies() -> Dict[str, Dict[str, float]]:
    """Return the exact marginal prior frequency of every attribute value.

    Conditional attributes are marginalised over their parent (gender for hair
    length and lower garment, upper type for sleeves). Colours of optional items
    (hat, carried item) are frequencies among people who have the item.

    Returns:
        dict[str, dict[str, float]]: ``{attribute: {value: probability}}``; the
        probabilities of one attribute sum to 1.

    Example:
        >>> freqs = attribute_frequencies()
        >>> freqs['lower_colour']['black'] > 5 * freqs['lower_colour']['red']
        True
    """
    parents = {'hair_length': 'gender', 'lower_type': 'gender', 'sleeves': 'upper_type'}
    freqs: Dict[str, Dict[str, float]] = {}
    for name in ATTRIBUTE_PARTS:
        if name in parents:
            parent_prior = _PRIORS[parents[name]]
            marginal = dict.fromkeys(ATTRIBUTE_VALUES[name], 0.0)
            for parent_value, p_parent in parent_prior.items():
                for value, p in _PRIORS[name][parent_value].items():
                    marginal[value] += p_parent * p
            freqs[name] = {k: round(v, 6) for k, v in marginal.items()}
        else:
            freqs[name] = {k: round(v, 6) for k, v in _PRIORS[name].items()}
    return freqs


def _choice(rng: np.random.Generator, table: Dict[str, float]) -> str:
    """Draw one key of ``table`` with its probability."""
    keys = list(table)
    cumulative = np.cumsum([table[k] for k in keys])
    index = int(
        np.searchsorted(cumulative, rng.random() * cumulative[-1], side='right')
    )
    return keys[min(index, len(keys) - 1)]


def _shade(
    rng: np.random.Generator, rgb: Tuple[int, int, int], spread: int
) -> List[int]:
    """A per-identity shade of a colour prototype (small uniform jitter)."""
    jitter = rng.integers(-spread, spread + 1, size=3)
    return [int(v) for v in np.clip(np.asarray(rgb) + jitter, 0, 255)]


def sample_identity(rng: np.random.Generator) -> Dict:
    """Draw one SynthPedes identity.

    Args:
        rng (numpy.random.Generator): The identity's own random stream; the
            same stream state always gives the same identity.

    Returns:
        dict: The categorical attributes (keys of :data:`ATTRIBUTE_PARTS`;
        ``hat_colour`` / ``carried_colour`` are None when there is no hat /
        carried item) plus ``rgb``: the identity's shade of each coloured
        item, ``{'hair'|'skin'|'upper'|'lower'|'shoes'|'hat'|'carried':
        [r, g, b]}``.

    Example:
        >>> import numpy as np
        >>> a = sample_identity(np.random.default_rng(3))
        >>> a == sample_identity(np.random.default_rng(3))
        True
    """
    p = _PRIORS
    ident: Dict[str, Optional[str]] = {}
    gender = _choice(rng, p['gender'])
    ident['gender'] = gender
    ident['build'] = _choice(rng, p['build'])
    ident['hair_colour'] = _choice(rng, p['hair_colour'])
    ident['hair_length'] = _choice(rng, p['hair_length'][gender])
    ident['hat'] = _choice(rng, p['hat'])
    ident['hat_colour'] = (
        None if ident['hat'] == 'none' else _choice(rng, p['hat_colour'])
    )
    upper_type = _choice(rng, p['upper_type'])
    ident['upper_type'] = upper_type
    ident['upper_colour'] = _choice(rng, p['upper_colour'])
    ident['sleeves'] = _choice(rng, p['sleeves'][upper_type])
    ident['pattern'] = _choice(rng, p['pattern'])
    ident['lower_type'] = _choice(rng, p['lower_type'][gender])
    ident['lower_colour'] = _choice(rng, p['lower_colour'])
    ident['shoe_type'] = _choice(rng, p['shoe_type'])
    ident['shoe_colour'] = _choice(rng, p['shoe_colour'])
    ident['carried'] = _choice(rng, p['carried'])
    ident['carried_colour'] = (
        None if ident['carried'] == 'none' else _choice(rng, p['carried_colour'])
    )

    skin = SKIN_TONES[int(rng.integers(len(SKIN_TONES)))]
    rgb = {
        'hair': _shade(rng, HAIR_COLOURS[ident['hair_colour']], 10),
        'skin': _shade(rng, skin, 8),
        'upper': _shade(rng, COLOURS[ident['upper_colour']], 14),
        'lower': _shade(rng, COLOURS[ident['lower_colour']], 14),
        'shoes': _shade(rng, COLOURS[ident['shoe_colour']], 12),
    }
    if ident['hat_colour'] is not None:
        rgb['hat'] = _shade(rng, COLOURS[ident['hat_colour']], 12)
    if ident['carried_colour'] is not None:
        rgb['carried'] = _shade(rng, COLOURS[ident['carried_colour']], 12)
    result: Dict = dict(ident)
    result['rgb'] = rgb
    return result


# Attributes whose prior is conditional on another attribute of the identity:
# name -> the attribute it depends on.
_CONDITIONED_ON = {
    'hair_length': 'gender',
    'lower_type': 'gender',
    'sleeves': 'upper_type',
}
# Optional items: the colour attribute is None when the item is 'none'.
_ITEM_COLOUR = {'hat_colour': 'hat', 'carried_colour': 'carried'}


def part_value_distribution(part: str, gender: str) -> List[Tuple[Tuple, float]]:
    """The prior over the joint values of one body part's attributes.

    Args:
        part (str): One of :data:`BODY_PARTS`.
        gender (str): The identity's gender (hair length and lower garment
            depend on it).

    Returns:
        list[tuple[tuple, float]]: ``(values, probability)`` for every joint
        value of :func:`part_attributes` ``(part)`` with non-zero prior, in a
        fixed order; the probabilities sum to 1. They are exactly the
        probabilities with which :func:`sample_identity` draws the part.

    Example:
        >>> dist = part_value_distribution('feet', 'male')
        >>> abs(sum(p for _, p in dist) - 1.0) < 1e-9
        True
    """
    if gender not in _PRIORS['gender']:
        raise ValueError(f'unknown gender {gender!r}')
    names = part_attributes(part)
    joint: List[Tuple[Dict[str, Optional[str]], float]] = [({}, 1.0)]
    for name in names:
        grown = []
        for values, prob in joint:
            if name in _ITEM_COLOUR and values[_ITEM_COLOUR[name]] == 'none':
                grown.append(({**values, name: None}, prob))
                continue
            table = _PRIORS[name]
            if name in _CONDITIONED_ON:
                parent = _CONDITIONED_ON[name]
                table = table[gender if parent == 'gender' else values[parent]]
            for value, p in table.items():
                if p > 0:
                    grown.append(({**values, name: value}, prob * p))
        joint = grown
    total = sum(p for _, p in joint)
    return [(tuple(v[n] for n in names), p / total) for v, p in joint]


# Which rgb shades each body part owns (the renderer's colour keys).
_PART_SHADES = {
    'head': (
        ('hair', 'hair_colour', HAIR_COLOURS, 10),
        ('hat', 'hat_colour', COLOURS, 12),
    ),
    'upper': (('upper', 'upper_colour', COLOURS, 14),),
    'lower': (('lower', 'lower_colour', COLOURS, 14),),
    'feet': (('shoes', 'shoe_colour', COLOURS, 12),),
    'carried': (('carried', 'carried_colour', COLOURS, 12),),
}


def family_member(base: Dict, part: str, rng: np.random.Generator) -> Dict:
    """An identity equal to ``base`` but for one body part, drawn with the prior.

    The new value of ``part`` is drawn from a coupling of the part's prior
    with itself that never repeats the base's value: the joint values are
    laid out in a random order on [0, 1), each over an interval as long as
    its prior probability; ``u`` is uniform in the base value's interval
    (so ``u`` is uniform on [0, 1) when the base was drawn from the prior)
    and the member takes the value at ``(u + 0.5) mod 1``. Both ends of the
    coupling follow the prior exactly, so a member is distributed as an
    identity of :func:`sample_identity`, and since no joint value has prior
    probability of 0.5 or more (checked) the member always differs from the
    base in ``part``. The colour shades of the changed part are drawn anew;
    every other attribute and shade (skin included) is the base's.

    Args:
        base (dict): An identity of :func:`sample_identity`.
        part (str): The body part to change (one of :data:`BODY_PARTS`).
        rng (numpy.random.Generator): The member's own random stream.

    Returns:
        dict: The member identity (a new dict; ``base`` is not modified).

    Example:
        >>> import numpy as np
        >>> base = sample_identity(np.random.default_rng(0))
        >>> member = family_member(base, 'lower', np.random.default_rng(1))
        >>> (member['lower_type'], member['lower_colour']) != (
        ...     base['lower_type'], base['lower_colour'])
        True
    """
    names = part_attributes(part)
    dist = part_value_distribution(part, base['gender'])
    largest = max(p for _, p in dist)
    if largest >= 0.5:
        raise ValueError(
            f'part {part!r} has a joint value of prior {largest:.3f} >= 0.5: '
            'no coupling can both keep the prior and always change it'
        )
    order = rng.permutation(len(dist))
    values = [dist[i][0] for i in order]
    probs = np.array([dist[i][1] for i in order], dtype=np.float64)
    starts = np.concatenate([[0.0], np.cumsum(probs)[:-1]])
    current = tuple(base[n] for n in names)
    try:
        at = values.index(current)
    except ValueError:
        raise ValueError(
            f'the base identity has {dict(zip(names, current))} for part '
            f'{part!r}, which its prior (gender {base["gender"]!r}) never draws'
        ) from None
    u = starts[at] + probs[at] * rng.random()
    v = (u + 0.5) % 1.0
    pick = int(np.searchsorted(starts, v, side='right')) - 1
    pick = min(max(pick, 0), len(values) - 1)
    if pick == at:  # only floating-point rounding at an interval's edge
        pick = (pick + 1) % len(values)
    member = {k: (dict(v) if k == 'rgb' else v) for k, v in base.items()}
    member.update(zip(names, values[pick]))
    for key, colour_name, palette, spread in _PART_SHADES[part]:
        member['rgb'].pop(key, None)
        if member[colour_name] is not None:
            member['rgb'][key] = _shade(rng, palette[member[colour_name]], spread)
    return member
