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
    'attribute_frequencies',
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
