"""The SynthPedes renderer: one person crop and its part mask from an identity.

The person is drawn with Pillow ``ImageDraw`` polygons and ellipses on a canvas
twice the output size (cheap anti-aliasing by a 2x box reduction), over a
cluttered background, and then degraded with numpy: lighting gain and gradient,
colour cast, blur and sensor noise. Every nuisance comes from the image's own
random stream: viewpoint (front / back / side facing left or right), pose (leg
stride, arm swing, head offset), scale and position jitter, background clutter
and partial occlusion.

What is visible follows the viewpoint: a backpack is seen whole from behind,
as shoulder straps from the front and as a box behind the back from the side;
the face shows from the front and side, the back of the head from behind; a
logo is on the front of a garment only.

The part mask has the output size and one part index per pixel
(:data:`~tbps_mm.datasets.synthpedes.attributes.PART_NAMES`): 0 background,
1 head (hair, face, hat), 2 upper (torso and arms), 3 lower (legs), 4 feet
(shoes), 5 carried item (bag and straps). Occluded pixels are background.

Written by hand (no library renders pedestrians); only numpy and Pillow.

Example:
    >>> import numpy as np
    >>> from tbps_mm.datasets.synthpedes.attributes import sample_identity
    >>> ident = sample_identity(np.random.default_rng(0))
    >>> image, mask, info = render_person(ident, np.random.default_rng(1))
    >>> image.size, mask.shape
    ((48, 128), (128, 48))
"""

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from .attributes import COLOURS

__all__ = ['VIEWS', 'render_person']

#: Viewpoints and their probabilities. 'left' / 'right' are side views facing
#: that way.
VIEWS: Dict[str, float] = {'front': 0.4, 'back': 0.35, 'left': 0.125, 'right': 0.125}

_SUPERSAMPLE = 2
_HEAD, _UPPER, _LOWER, _FEET, _CARRIED = 1, 2, 3, 4, 5

RGB = Tuple[int, int, int]
Point = Tuple[float, float]


def _scale(rgb: Sequence[int], factor: float) -> RGB:
    """Darken (factor < 1) or lighten (factor > 1) a colour."""
    return tuple(int(min(255, max(0, round(c * factor)))) for c in rgb)


def _contrast(rgb: Sequence[int]) -> RGB:
    """A colour that stands out on ``rgb`` (for stripes, checks, logos)."""
    luma = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    return (236, 236, 230) if luma < 110 else (30, 30, 34)


class _Painter:
    """Draws body-unit shapes on the image and the part mask at once.

    Body units: the person is 1 unit tall, y runs from the top of the head (0)
    to the soles (1), x from the body's axis; ``sign`` mirrors x so that side
    views can face either way.
    """

    def __init__(
        self,
        image: Image.Image,
        mask: Image.Image,
        cx: float,
        top: float,
        height: float,
        sign: float,
    ) -> None:
        self.image = image
        self.draw = ImageDraw.Draw(image)
        self.mask_draw = ImageDraw.Draw(mask)
        self.cx, self.top, self.h, self.sign = cx, top, height, sign

    def pt(self, x: float, y: float) -> Point:
        return (self.cx + self.sign * x * self.h, self.top + y * self.h)

    def poly(
        self,
        points: Sequence[Point],
        rgb: Sequence[int],
        part: int,
        outline: bool = False,
    ) -> List[Point]:
        xy = [self.pt(x, y) for x, y in points]
        self.draw.polygon(
            xy, fill=tuple(rgb), outline=_scale(rgb, 0.7) if outline else None
        )
        self.mask_draw.polygon(xy, fill=part)
        return xy

    def ellipse(
        self, x: float, y: float, rx: float, ry: float, rgb: Sequence[int], part: int
    ) -> None:
        px, py = self.pt(x, y)
        box = (px - rx * self.h, py - ry * self.h, px + rx * self.h, py + ry * self.h)
        self.draw.ellipse(box, fill=tuple(rgb))
        self.mask_draw.ellipse(box, fill=part)

    def limb(
        self,
        p0: Point,
        p1: Point,
        w0: float,
        w1: float,
        rgb: Sequence[int],
        part: int,
        round_end: bool = True,
    ) -> None:
        """A tapered segment from ``p0`` to ``p1`` (widths in body units)."""
        dx, dy = p1[0] - p0[0], p1[1] - p0[1]
        norm = max(1e-6, (dx * dx + dy * dy) ** 0.5)
        nx, ny = -dy / norm, dx / norm
        quad = [
            (p0[0] + nx * w0 / 2, p0[1] + ny * w0 / 2),
            (p1[0] + nx * w1 / 2, p1[1] + ny * w1 / 2),
            (p1[0] - nx * w1 / 2, p1[1] - ny * w1 / 2),
            (p0[0] - nx * w0 / 2, p0[1] - ny * w0 / 2),
        ]
        self.poly(quad, rgb, part, outline=True)
        if round_end:
            self.ellipse(p1[0], p1[1], w1 / 2, w1 / 2, rgb, part)

    def line(
        self,
        points: Sequence[Point],
        width: float,
        rgb: Sequence[int],
        part: Optional[int],
    ) -> None:
        xy = [self.pt(x, y) for x, y in points]
        px = max(1, int(round(width * self.h)))
        self.draw.line(xy, fill=tuple(rgb), width=px)
        if part is not None:
            self.mask_draw.line(xy, fill=part, width=px)

    def pattern(
        self, polygon_xy: Sequence[Point], kind: str, rgb: Sequence[int]
    ) -> None:
        """Stripes / checks clipped to a garment polygon (pixel coords)."""
        size = self.image.size
        clip = Image.new('L', size, 0)
        ImageDraw.Draw(clip).polygon(list(polygon_xy), fill=255)
        lines = Image.new('L', size, 0)
        ldraw = ImageDraw.Draw(lines)
        xs = [p[0] for p in polygon_xy]
        ys = [p[1] for p in polygon_xy]
        period = 0.034 * self.h
        # checks cross two line sets: thinner lines keep the garment's own
        # colour dominant
        thickness = 0.012 if kind == 'striped' else 0.008
        width = max(1, int(round(thickness * self.h)))
        y = min(ys) + period / 2
        while y < max(ys):
            ldraw.line([(min(xs), y), (max(xs), y)], fill=255, width=width)
            y += period
        if kind == 'checked':
            x = min(xs) + period / 2
            while x < max(xs):
                ldraw.line([(x, min(ys)), (x, max(ys))], fill=255, width=width)
                x += period
        self.image.paste(tuple(rgb), mask=ImageChops.multiply(lines, clip))


def _muted(rng: np.random.Generator, low: int = 60, high: int = 200) -> RGB:
    """A dull background colour: a grey level with a mild tint."""
    level = rng.uniform(low, high)
    tint = rng.normal(0.0, 16.0, size=3)
    return tuple(int(v) for v in np.clip(level + tint, 0, 255))


def _background_colour(rng: np.random.Generator) -> RGB:
    """Mostly dull colours, sometimes a saturated distractor."""
    if rng.random() < 0.12:
        names = list(COLOURS)
        base = COLOURS[names[int(rng.integers(len(names)))]]
        return _scale(base, rng.uniform(0.6, 0.9))
    return _muted(rng)


def _draw_background(
    draw: ImageDraw.ImageDraw, rng: np.random.Generator, width: int, height: int
) -> None:
    """A street-like scene: wall, ground plane and clutter shapes."""
    draw.rectangle((0, 0, width, height), fill=_muted(rng, 70, 210))
    horizon = rng.uniform(0.55, 0.85) * height
    draw.rectangle((0, horizon, width, height), fill=_muted(rng, 50, 170))
    for _ in range(int(rng.integers(3, 9))):
        kind = int(rng.integers(4))
        colour = _background_colour(rng)
        x0, x1 = sorted(rng.uniform(-0.2, 1.2, size=2) * width)
        y0, y1 = sorted(rng.uniform(-0.1, 1.0, size=2) * height)
        if kind == 0:  # window, door, sign
            draw.rectangle((x0, y0, x1, y1), fill=colour)
        elif kind == 1:  # bush, car body, blob
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        elif kind == 2:  # pole
            x = rng.uniform(0, width)
            w = rng.uniform(0.02, 0.07) * width
            draw.rectangle((x, 0, x + w, height), fill=colour)
        else:  # kerb, rail, shadow line
            y = rng.uniform(0.3, 1.0) * height
            draw.line(
                (0, y, width, y + rng.uniform(-8, 8)),
                fill=colour,
                width=int(rng.integers(2, 7)),
            )


class _Body:
    """Body proportions of one identity in body units (see :class:`_Painter`)."""

    def __init__(self, identity: Dict, side: bool) -> None:
        build = {'slim': 0.88, 'average': 1.0, 'heavy': 1.2}[identity['build']]
        female = identity['gender'] == 'female'
        self.shoulder = (0.092 if female else 0.106) * build
        self.waist = (0.072 if female else 0.086) * build
        self.hip = (0.096 if female else 0.09) * build
        self.arm_w = 0.05 * (0.9 + 0.1 * build)
        self.leg_w = 0.082 * (0.85 + 0.15 * build)
        if side:  # seen from the side, the torso shows its depth
            self.shoulder *= 0.62
            self.waist *= 0.7
            self.hip *= 0.72


def _torso_polygon(body: _Body, bottom: float, flare: float) -> List[Point]:
    """The upper garment's outline, from the neckline to ``bottom``."""
    s, w, h = body.shoulder, body.waist, body.hip * flare
    return [
        (-0.035, 0.15),
        (0.035, 0.15),
        (s, 0.168),
        (s * 0.98, 0.25),
        (w, 0.39),
        (h, bottom),
        (-h, bottom),
        (-w, 0.39),
        (-s * 0.98, 0.25),
        (-s, 0.168),
    ]


def _draw_garment_details(
    p: _Painter,
    ident: Dict,
    body: _Body,
    view: str,
    bottom: float,
    torso_xy: List[Point],
) -> None:
    """Type cues (collar, zip, buttons, hood, hem) and the pattern."""
    rgb = ident['rgb']['upper']
    dark = _scale(rgb, 0.62)
    kind = ident['upper_type']
    thin = 0.011
    if ident['pattern'] in ('striped', 'checked'):
        p.pattern(torso_xy, ident['pattern'], _contrast(rgb))
    if view == 'front':
        if kind in ('jacket', 'hoodie'):
            p.line([(0.0, 0.155), (0.0, bottom)], thin, dark, _UPPER)
        if kind == 'coat':
            p.line([(0.0, 0.155), (0.0, bottom)], thin * 0.8, dark, _UPPER)
            for y in (0.24, 0.32, 0.40, 0.48, 0.56):
                p.ellipse(0.02, y, 0.008, 0.008, dark, _UPPER)
        if kind in ('shirt', 'coat', 'jacket'):  # collar flaps
            collar = (236, 236, 230) if kind == 'shirt' else _scale(rgb, 0.8)
            p.poly(
                [(-0.038, 0.148), (0.0, 0.2), (-0.012, 0.205), (-0.05, 0.165)],
                collar,
                _UPPER,
            )
            p.poly(
                [(0.038, 0.148), (0.0, 0.2), (0.012, 0.205), (0.05, 0.165)],
                collar,
                _UPPER,
            )
        if kind == 'shirt':
            for y in (0.25, 0.31, 0.37, 0.43):
                p.ellipse(0.0, y, 0.006, 0.006, dark, _UPPER)
        if kind == 'hoodie':  # hood rim around the neck and drawstrings
            p.line([(-0.045, 0.15), (0.0, 0.185), (0.045, 0.15)], 0.018, dark, _UPPER)
            p.line([(-0.012, 0.185), (-0.012, 0.25)], 0.006, (236, 236, 230), _UPPER)
            p.line([(0.012, 0.185), (0.012, 0.25)], 0.006, (236, 236, 230), _UPPER)
        if ident['pattern'] == 'logo':
            logo = _contrast(rgb)
            p.poly(
                [(-0.04, 0.22), (0.04, 0.22), (0.04, 0.29), (-0.04, 0.29)], logo, _UPPER
            )
            p.ellipse(0.0, 0.255, 0.018, 0.018, rgb, _UPPER)
    elif view == 'back' and kind == 'hoodie':
        p.poly(
            [(-0.055, 0.15), (0.055, 0.15), (0.045, 0.23), (0.0, 0.25), (-0.045, 0.23)],
            _scale(rgb, 0.8),
            _UPPER,
            outline=True,
        )
    if kind == 'sweater':  # ribbed hem band
        p.line(
            [(-body.hip, bottom - 0.012), (body.hip, bottom - 0.012)],
            0.02,
            dark,
            _UPPER,
        )


def _draw_legs(
    p: _Painter, ident: Dict, body: _Body, view: str, rng: np.random.Generator
) -> None:
    """Legs (garment and bare skin), the skirt and the shoes."""
    skin = ident['rgb']['skin']
    lower = ident['rgb']['lower']
    shoes = ident['rgb']['shoes']
    kind = ident['lower_type']
    side = view in ('left', 'right')
    if side:
        stride = rng.uniform(0.02, 0.11)
        legs = [
            ((0.0, 0.5), (-stride * 0.45, 0.725), (-stride, 0.945)),
            ((0.0, 0.5), (stride * 0.55, 0.72), (stride * 0.9, 0.945)),
        ]
    else:
        spread = rng.uniform(0.035, 0.06)
        legs = []
        for s in (-1.0, 1.0):
            lift = rng.uniform(-0.012, 0.0)
            legs.append(
                (
                    (s * body.hip * 0.5, 0.5),
                    (s * spread * 1.05, 0.72),
                    (s * spread, 0.945 + lift),
                )
            )
    wt, wk, wa = body.leg_w, body.leg_w * 0.78, body.leg_w * 0.58
    garment_end = {'shorts': 0.64, 'skirt': 0.5}.get(kind, 1.0)
    for hip, knee, ankle in legs:
        # skin first, garment over it down to where the garment ends
        if garment_end < 1.0:
            p.limb(hip, knee, wt, wk, skin, _LOWER)
            p.limb(knee, ankle, wk, wa, skin, _LOWER)
        if kind in ('trousers', 'jeans'):
            p.limb(hip, knee, wt, wk, lower, _LOWER)
            p.limb(knee, ankle, wk, wa * 1.1, lower, _LOWER, round_end=False)
            if kind == 'jeans':  # lighter outer seam
                p.line(
                    [(hip[0] * 1.6, 0.52), knee, ankle],
                    0.006,
                    _scale(lower, 1.35),
                    _LOWER,
                )
        elif kind == 'shorts':
            t = (garment_end - hip[1]) / (knee[1] - hip[1])
            end = (hip[0] + t * (knee[0] - hip[0]), garment_end)
            p.limb(hip, end, wt * 1.1, wt, lower, _LOWER, round_end=False)
    # the waistband joins the legs under the upper garment
    p.poly(
        [
            (-body.hip, 0.46),
            (body.hip, 0.46),
            (body.hip * 0.9, 0.56),
            (-body.hip * 0.9, 0.56),
        ],
        lower,
        _LOWER,
    )
    if kind == 'skirt':
        flare = 1.7 if not side else 1.5
        p.poly(
            [
                (-body.hip, 0.46),
                (body.hip, 0.46),
                (body.hip * flare, 0.7),
                (-body.hip * flare, 0.7),
            ],
            lower,
            _LOWER,
            outline=True,
        )
    for _, _, ankle in legs:
        _draw_shoe(p, ident['shoe_type'], shoes, skin, ankle, side)


def _draw_shoe(
    p: _Painter,
    kind: str,
    rgb: Sequence[int],
    skin: Sequence[int],
    ankle: Point,
    side: bool,
) -> None:
    x, y = ankle
    top = y - (0.055 if kind == 'boots' else 0.008)
    if side:
        pts = [
            (x - 0.03, top),
            (x + 0.02, top),
            (x + 0.07, 0.985),
            (x + 0.07, 1.0),
            (x - 0.035, 1.0),
        ]
    else:
        pts = [(x - 0.032, top), (x + 0.032, top), (x + 0.036, 1.0), (x - 0.036, 1.0)]
    if kind == 'sandals':
        p.poly(pts, skin, _FEET)
        p.line([(x - 0.034, 0.975), (x + 0.034, 0.975)], 0.012, rgb, _FEET)
        p.line([(x - 0.036, 0.996), (x + 0.036, 0.996)], 0.01, rgb, _FEET)
    else:
        p.poly(pts, rgb, _FEET, outline=True)
        if kind == 'sneakers':  # white sole
            sole = (236, 236, 230) if sum(rgb) < 600 else (120, 120, 120)
            p.line([(x - 0.036, 0.994), (x + 0.036, 0.994)], 0.01, sole, _FEET)


def _draw_arm(
    p: _Painter, ident: Dict, body: _Body, shoulder: Point, elbow: Point, wrist: Point
) -> None:
    sleeve = ident['rgb']['upper']
    skin = ident['rgb']['skin']
    w = body.arm_w
    if ident['sleeves'] == 'long':
        p.limb(shoulder, elbow, w, w * 0.85, sleeve, _UPPER)
        p.limb(elbow, wrist, w * 0.85, w * 0.7, sleeve, _UPPER)
    else:
        p.limb(elbow, wrist, w * 0.75, w * 0.62, skin, _UPPER)
        p.limb(shoulder, elbow, w * 0.85, w * 0.75, skin, _UPPER)
        mid = (
            shoulder[0] + 0.45 * (elbow[0] - shoulder[0]),
            shoulder[1] + 0.45 * (elbow[1] - shoulder[1]),
        )
        p.limb(shoulder, mid, w * 1.05, w * 1.0, sleeve, _UPPER, round_end=False)
    p.ellipse(wrist[0], wrist[1] + 0.018, w * 0.42, w * 0.5, skin, _UPPER)
    p.ellipse(shoulder[0], shoulder[1], w * 0.55, w * 0.55, sleeve, _UPPER)


def _draw_head(p: _Painter, ident: Dict, view: str, dx: float) -> None:
    """Neck, face or back of the head, hair and hat."""
    skin = ident['rgb']['skin']
    hair = ident['rgb']['hair']
    long_hair = ident['hair_length'] == 'long'
    side = view in ('left', 'right')
    p.limb((0.0, 0.11), (0.0, 0.165), 0.04, 0.045, skin, _HEAD, round_end=False)
    if view == 'back':
        p.ellipse(dx, 0.066, 0.047, 0.064, hair, _HEAD)
    elif view == 'front':
        p.ellipse(dx, 0.058, 0.05, 0.06, hair, _HEAD)
        p.ellipse(dx, 0.074, 0.041, 0.054, skin, _HEAD)
        for ex in (-0.017, 0.017):
            p.ellipse(dx + ex, 0.07, 0.006, 0.005, (40, 30, 30), _HEAD)
    else:
        p.ellipse(dx, 0.066, 0.044, 0.064, skin, _HEAD)
        p.poly(
            [
                (dx + 0.04, 0.03),
                (dx + 0.03, 0.005),
                (dx, -0.002),
                (dx - 0.04, 0.015),
                (dx - 0.048, 0.07),
                (dx - 0.035, 0.11),
                (dx - 0.01, 0.08),
                (dx + 0.005, 0.035),
            ],
            hair,
            _HEAD,
        )
        p.ellipse(dx + 0.024, 0.068, 0.006, 0.005, (40, 30, 30), _HEAD)
    if long_hair:
        if view == 'back':
            p.poly(
                [
                    (dx - 0.05, 0.07),
                    (dx + 0.05, 0.07),
                    (0.062, 0.25),
                    (0.0, 0.265),
                    (-0.062, 0.25),
                ],
                hair,
                _HEAD,
            )
        elif view == 'front':
            for s in (-1.0, 1.0):
                p.poly(
                    [
                        (dx + s * 0.05, 0.05),
                        (dx + s * 0.035, 0.07),
                        (s * 0.035, 0.2),
                        (s * 0.062, 0.225),
                        (dx + s * 0.055, 0.09),
                    ],
                    hair,
                    _HEAD,
                )
        else:
            p.poly(
                [(dx - 0.045, 0.05), (dx - 0.01, 0.09), (-0.01, 0.22), (-0.055, 0.23)],
                hair,
                _HEAD,
            )
    hat = ident['hat']
    if hat == 'none':
        return
    rgb = ident['rgb']['hat']
    if hat == 'cap':
        p.poly(
            [
                (dx - 0.05, 0.035),
                (dx - 0.044, 0.008),
                (dx, -0.004),
                (dx + 0.044, 0.008),
                (dx + 0.05, 0.035),
            ],
            rgb,
            _HEAD,
            outline=True,
        )
        if view == 'front':
            p.ellipse(dx, 0.036, 0.052, 0.01, _scale(rgb, 0.8), _HEAD)
        elif side:
            p.poly(
                [
                    (dx + 0.03, 0.03),
                    (dx + 0.085, 0.038),
                    (dx + 0.085, 0.044),
                    (dx + 0.03, 0.042),
                ],
                _scale(rgb, 0.8),
                _HEAD,
            )
    elif hat == 'beanie':
        p.poly(
            [
                (dx - 0.052, 0.05),
                (dx - 0.048, 0.012),
                (dx - 0.02, -0.012),
                (dx + 0.02, -0.012),
                (dx + 0.048, 0.012),
                (dx + 0.052, 0.05),
            ],
            rgb,
            _HEAD,
            outline=True,
        )
        p.line(
            [(dx - 0.052, 0.045), (dx + 0.052, 0.045)], 0.012, _scale(rgb, 0.8), _HEAD
        )
    else:  # sun hat: wide brim and a crown
        p.ellipse(dx, 0.035, 0.088, 0.016, rgb, _HEAD)
        p.poly(
            [
                (dx - 0.045, 0.035),
                (dx - 0.04, -0.002),
                (dx + 0.04, -0.002),
                (dx + 0.045, 0.035),
            ],
            _scale(rgb, 0.88),
            _HEAD,
        )


def _draw_backpack_behind(p: _Painter, ident: Dict, body: _Body, view: str) -> None:
    """The part of a backpack that the torso hides or partly covers."""
    rgb = ident['rgb']['carried']
    if view in ('left', 'right'):  # a box protruding behind the back
        b = -body.shoulder
        p.poly(
            [(b + 0.02, 0.18), (b - 0.075, 0.19), (b - 0.085, 0.42), (b + 0.02, 0.43)],
            rgb,
            _CARRIED,
            outline=True,
        )
        p.line([(b - 0.06, 0.34), (b - 0.03, 0.34)], 0.012, _scale(rgb, 0.65), _CARRIED)


def _draw_carried_front(
    p: _Painter, ident: Dict, body: _Body, view: str, hands: List[Point]
) -> None:
    """Carried items over the body: backpack from behind, straps, bags."""
    kind = ident['carried']
    if kind == 'none':
        return
    rgb = ident['rgb']['carried']
    dark = _scale(rgb, 0.65)
    side = view in ('left', 'right')
    s = body.shoulder
    if kind == 'backpack':
        if view == 'back':
            p.poly(
                [
                    (-s * 0.82, 0.19),
                    (s * 0.82, 0.19),
                    (s * 0.86, 0.43),
                    (-s * 0.86, 0.43),
                ],
                rgb,
                _CARRIED,
                outline=True,
            )
            p.poly(
                [
                    (-s * 0.55, 0.33),
                    (s * 0.55, 0.33),
                    (s * 0.58, 0.42),
                    (-s * 0.58, 0.42),
                ],
                dark,
                _CARRIED,
            )
            p.ellipse(0.0, 0.19, s * 0.6, 0.025, rgb, _CARRIED)
        elif view == 'front':
            for sx in (-1.0, 1.0):
                p.line(
                    [(sx * s * 0.55, 0.16), (sx * s * 0.62, 0.36)], 0.022, rgb, _CARRIED
                )
        else:
            p.line([(-s * 0.5, 0.16), (s * 0.3, 0.35)], 0.02, rgb, _CARRIED)
    elif kind == 'shoulder bag':
        sx = -1.0 if view == 'back' else 1.0
        if side:
            p.line([(0.0, 0.16), (0.02, 0.44)], 0.014, dark, _CARRIED)
            p.poly(
                [(-0.04, 0.43), (0.05, 0.43), (0.05, 0.54), (-0.04, 0.54)],
                rgb,
                _CARRIED,
                outline=True,
            )
        else:
            p.line(
                [(-sx * s * 0.6, 0.16), (sx * body.hip * 1.2, 0.45)],
                0.016,
                dark,
                _CARRIED,
            )
            x = sx * (body.hip + 0.035)
            p.poly(
                [
                    (x - 0.045, 0.43),
                    (x + 0.045, 0.43),
                    (x + 0.045, 0.54),
                    (x - 0.045, 0.54),
                ],
                rgb,
                _CARRIED,
                outline=True,
            )
            p.line([(x - 0.045, 0.46), (x + 0.045, 0.46)], 0.008, dark, _CARRIED)
    elif kind == 'handbag':
        hx, hy = hands[-1]
        p.line(
            [(hx - 0.02, hy + 0.03), (hx, hy), (hx + 0.02, hy + 0.03)],
            0.008,
            dark,
            _CARRIED,
        )
        p.poly(
            [
                (hx - 0.04, hy + 0.03),
                (hx + 0.04, hy + 0.03),
                (hx + 0.048, hy + 0.11),
                (hx - 0.048, hy + 0.11),
            ],
            rgb,
            _CARRIED,
            outline=True,
        )


def _draw_person(p: _Painter, ident: Dict, view: str, rng: np.random.Generator) -> None:
    side = view in ('left', 'right')
    body = _Body(ident, side)
    upper = ident['rgb']['upper']
    kind = ident['upper_type']
    bottom = {'coat': 0.66, 'jacket': 0.52}.get(kind, 0.5)
    flare = 1.18 if kind == 'coat' else 1.0
    swing = rng.uniform(-0.07, 0.07)
    head_dx = rng.uniform(-0.008, 0.008) + (0.012 if side else 0.0)

    if side:
        far_shoulder = (0.0, 0.18)
        far_elbow = (-swing * 0.5, 0.33)
        far_wrist = (-swing, 0.465)
        _draw_arm(p, ident, body, far_shoulder, far_elbow, far_wrist)
        if ident['carried'] == 'backpack':
            _draw_backpack_behind(p, ident, body, view)
    _draw_legs(p, ident, body, view, rng)
    torso_xy = p.poly(_torso_polygon(body, bottom, flare), upper, _UPPER, outline=True)
    _draw_garment_details(p, ident, body, view, bottom, torso_xy)
    if view == 'back' and ident['carried'] == 'backpack':
        _draw_carried_front(p, ident, body, view, [])
        carried_done = True
    else:
        carried_done = False
    _draw_head(p, ident, view, head_dx)

    if side:
        shoulder = (0.0, 0.18)
        elbow = (swing * 0.5, 0.33)
        wrist = (swing, 0.465)
        hands = [(wrist[0], wrist[1] + 0.02)]
        _draw_arm(p, ident, body, shoulder, elbow, wrist)
    else:
        hands = []
        for s in (-1.0, 1.0):
            out = rng.uniform(0.0, 0.025)
            shoulder = (s * (body.shoulder - 0.012), 0.185)
            elbow = (s * (body.shoulder + 0.008 + out * 0.6), 0.33)
            wrist = (s * (body.shoulder + 0.004 + out), 0.465)
            _draw_arm(p, ident, body, shoulder, elbow, wrist)
            hands.append((wrist[0], wrist[1] + 0.02))
    if not carried_done:
        _draw_carried_front(p, ident, body, view, hands)


def _draw_occluder(
    image_draw: ImageDraw.ImageDraw,
    mask_draw: ImageDraw.ImageDraw,
    rng: np.random.Generator,
    width: int,
    height: int,
) -> str:
    """Maybe cover part of the crop (bench, car, wall edge, pole)."""
    roll = rng.random()
    if roll >= 0.3:
        return 'none'
    colour = _background_colour(rng)
    if roll < 0.12:
        kind = 'bottom'
        y0 = height * (1.0 - rng.uniform(0.07, 0.2))
        if rng.random() < 0.5:
            box = (0, y0, width, height)
        else:
            x = rng.uniform(0.3, 0.7) * width
            box = (0, y0, x, height) if rng.random() < 0.5 else (x, y0, width, height)
    elif roll < 0.22:
        kind = 'side'
        w = rng.uniform(0.12, 0.3) * width
        y0 = rng.uniform(0.0, 0.5) * height
        box = (
            (0, y0, w, height) if rng.random() < 0.5 else (width - w, y0, width, height)
        )
    else:
        kind = 'pole'
        w = rng.uniform(0.06, 0.13) * width
        x = rng.uniform(0.1, 0.9) * width - w / 2
        box = (x, 0, x + w, height)
    image_draw.rectangle(box, fill=colour)
    mask_draw.rectangle(box, fill=0)
    return kind


def render_person(
    identity: Dict,
    rng: np.random.Generator,
    image_size: Tuple[int, int] = (128, 48),
    view: Optional[str] = None,
    occlusion: bool = True,
) -> Tuple[Image.Image, np.ndarray, Dict]:
    """Render one crop of ``identity`` with random nuisances.

    Args:
        identity (dict): An identity from
            :func:`~tbps_mm.datasets.synthpedes.attributes.sample_identity`.
        rng (numpy.random.Generator): The image's own random stream.
        image_size (tuple[int, int]): Output (height, width) in pixels.
        view (str, optional): Force a viewpoint (one of :data:`VIEWS`);
            drawn from :data:`VIEWS` when None.
        occlusion (bool): Draw the random occluder (bench, wall edge, pole).
            Scenes that composite the person over their own background
            (SynthPedes videos) turn it off. Defaults to True.

    Returns:
        tuple: ``(image, mask, info)``: the RGB ``PIL.Image``, the uint8 part
        mask (H, W) with part indices 0..5, and a dict of the nuisances drawn
        (``view``, ``occluder``, ``scale``, ``blur``, ``noise``, ``gain``).

    Example:
        >>> import numpy as np
        >>> from tbps_mm.datasets.synthpedes.attributes import sample_identity
        >>> ident = sample_identity(np.random.default_rng(5))
        >>> _, mask, info = render_person(ident, np.random.default_rng(0),
        ...                               view='back')
        >>> info['view'], int(mask.max()) <= 5
        ('back', True)
    """
    height, width = int(image_size[0]), int(image_size[1])
    if view is None:
        names = list(VIEWS)
        probs = np.asarray(list(VIEWS.values()))
        cumulative = np.cumsum(probs) / probs.sum()
        view = names[
            min(int(np.searchsorted(cumulative, rng.random())), len(names) - 1)
        ]
    elif view not in VIEWS:
        raise ValueError(f'view must be one of {list(VIEWS)}, got {view!r}')
    ch, cw = height * _SUPERSAMPLE, width * _SUPERSAMPLE
    image = Image.new('RGB', (cw, ch))
    mask = Image.new('L', (cw, ch), 0)
    _draw_background(ImageDraw.Draw(image), rng, cw, ch)

    # Scale and position jitter: the crop is detector-like, so the person
    # fills most of the height, a little off-centre.
    scale = rng.uniform(0.8, 0.95)
    person_h = ch * scale
    top = rng.uniform(0.01, 0.99 - scale) * ch
    cx = cw / 2 + rng.uniform(-0.07, 0.07) * cw
    sign = -1.0 if view == 'left' else 1.0
    painter = _Painter(image, mask, cx, top, person_h, sign)
    _draw_person(painter, identity, view, rng)
    occluder = 'none'
    if occlusion:
        occluder = _draw_occluder(painter.draw, painter.mask_draw, rng, cw, ch)

    image = image.reduce(_SUPERSAMPLE)
    mask = mask.resize((width, height), Image.NEAREST)

    blur = float(rng.uniform(0.3, 0.8)) if rng.random() < 0.4 else 0.0
    if blur > 0:
        image = image.filter(ImageFilter.GaussianBlur(blur))
    arr = np.asarray(image, dtype=np.float32)
    gain = rng.uniform(0.82, 1.15)
    cast = 1.0 + rng.uniform(-0.06, 0.06, size=3)
    # lighting gradient across the crop (sun from one side, shade below)
    horizontal = rng.random() < 0.5
    ramp = np.linspace(-1.0, 1.0, width if horizontal else height)
    ramp = 1.0 + rng.uniform(-0.12, 0.12) * ramp
    ramp = ramp[None, :, None] if horizontal else ramp[:, None, None]
    noise = float(rng.uniform(0.0, 6.0))
    arr = arr * (gain * cast)[None, None, :] * ramp
    arr += noise * rng.standard_normal(size=arr.shape, dtype=np.float32)
    out = Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), 'RGB')
    info = dict(
        view=view,
        occluder=occluder,
        scale=round(float(scale), 4),
        blur=round(blur, 4),
        noise=round(noise, 4),
        gain=round(float(gain), 4),
    )
    return out, np.asarray(mask, dtype=np.uint8), info
