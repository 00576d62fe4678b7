"""SynthPedes videos: street scenes in which SynthPedes people walk past cameras.

:func:`generate_synthpedes_videos` renders, deterministically from a seed, a
few static "cameras" (one video each) over which SynthPedes identities walk:
across the frame (side views, facing the way they walk) or towards and away
from the camera (front and back views, growing or shrinking with
perspective). Several identities appear in more than one camera, at different
times. Every frame of a person is drawn by
:func:`~tbps_mm.datasets.synthpedes.renderer.render_person` (pose, arm swing
and lighting vary frame to frame, as a walking person's do), cut out by its
part mask and composited over the camera's background in depth order, so
people occlude each other. Captions are those of the image dataset
(:func:`~tbps_mm.datasets.synthpedes.captions.write_captions`).

Folder layout (``OUT_DIR``)::

    videos/cam{c}.mp4               MPEG-4 part 2 in MP4 (byte-reproducible)
    gt/cam{c}.txt                   MOTChallenge ground truth, one row per
                                    visible person per frame:
                                    frame,id,x,y,w,h,1,1,visibility (frame from 1)
    videos.json                     identities (attributes, captions) and
                                    videos (camera, start time, fps, size,
                                    which identities appear when)
    synthpedes_videos_meta.json     written last: what was generated

Boxes are the person's full extent clipped to the frame; ``visibility`` is
the fraction of the person's pixels that are in the frame and not hidden by
a nearer person. A row is written when at least one pixel is visible.

Written by hand (no library renders such scenes); numpy, Pillow and PyAV.

Example:
    >>> import tempfile, os.path as osp
    >>> root = generate_synthpedes_videos(osp.join(tempfile.mkdtemp(), 'v'),
    ...                                   'tiny', seed=0, progress=False)
    >>> read_synthpedes_videos_meta(root)['num_videos']
    2
"""

import os
import os.path as osp
import shutil
from datetime import datetime, timedelta
from typing import Dict, List, Optional, Tuple

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from .attributes import sample_identity
from .captions import write_captions
from .generator import dump_json, existing_output, read_synthpedes_meta
from .renderer import render_person

__all__ = [
    'VIDEO_GENERATOR_VERSION',
    'VIDEO_SIZES',
    'VIDEO_META_FILE',
    'VIDEO_ANN_FILE',
    'generate_synthpedes_videos',
    'read_synthpedes_videos_meta',
]

#: Bumped whenever the output for a given seed and size changes.
VIDEO_GENERATOR_VERSION = '1.0'

#: Preset sizes. ``appearances`` is how many walks each identity makes (each
#: in a different camera, at most ``num_cameras``).
VIDEO_SIZES: Dict[str, Dict] = {
    'tiny': dict(
        num_cameras=2,
        duration=4.0,
        fps=10,
        frame_size=(180, 320),
        num_ids=4,
        max_appearances=2,
    ),
    'small': dict(
        num_cameras=3,
        duration=20.0,
        fps=10,
        frame_size=(180, 320),
        num_ids=24,
        max_appearances=3,
    ),
}

VIDEO_META_FILE = 'synthpedes_videos_meta.json'
VIDEO_ANN_FILE = 'videos.json'
VIDEO_DIR = 'videos'
GT_DIR = 'gt'
#: The wall-clock time of the first camera's first frame.
START_TIME = datetime(2025, 6, 2, 10, 0, 0)
#: Person height over crop height in the image dataset's crops (its scale
#: jitter is 0.8-0.95): a crop drawn this much taller than the person.
_CROP_MARGIN = 0.875
# Horizon and the nearest / farthest feet row, as fractions of the height.
_HORIZON, _FEET_NEAR, _FEET_FAR = 0.38, 0.98, 0.7
# Person height at the nearest feet row, as a fraction of the frame height.
_HEIGHT_NEAR = 0.8
# Independent random streams.
_ID_STREAM, _SCHEDULE_STREAM, _FRAME_STREAM, _PERSON_STREAM = 0, 1, 2, 3
_CAPTION_STREAM, _SCENE_STREAM = 4, 5
# MPEG-4 part 2: FFmpeg's own encoder gives the same bytes on every run (the
# libx264 builds tried did not, even single-threaded).
_CODECS = ('mpeg4',)
_IDENTITY_KEYS = ('generator_version', 'size', 'seed', 'num_ids', 'num_cameras')


def read_synthpedes_videos_meta(out_dir: str) -> Optional[Dict]:
    """Read the meta file of a complete SynthPedes video folder.

    Args:
        out_dir (str): The folder.

    Returns:
        dict | None: The meta, or None when the folder holds no complete
        SynthPedes video set.

    Raises:
        ValueError: The meta file exists but is not a JSON object.

    Example:
        >>> read_synthpedes_videos_meta('no/such/folder') is None
        True
    """
    return read_synthpedes_meta(out_dir, VIDEO_META_FILE)


def _pick_codec() -> str:
    import av

    for name in _CODECS:
        try:
            av.codec.Codec(name, 'w')
            return name
        except Exception:  # noqa: BLE001 - codec absent from this FFmpeg build
            continue
    raise RuntimeError(f'this PyAV build has none of the video encoders {_CODECS}')


def _muted(rng: np.random.Generator, low: float, high: float) -> Tuple[int, ...]:
    level = rng.uniform(low, high)
    return tuple(int(v) for v in np.clip(level + rng.normal(0, 14, 3), 0, 255))


def _draw_scene(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A static street: building fronts with windows and doors, a pavement
    and kerb, poles and bushes; all behind the people."""
    image = Image.new('RGB', (width, height), _muted(rng, 120, 200))
    draw = ImageDraw.Draw(image)
    horizon = int(_HORIZON * height)
    x = 0
    while x < width:  # building fronts up to the pavement
        w = int(rng.uniform(0.18, 0.4) * width)
        top = int(rng.uniform(0.0, 0.15) * height)
        draw.rectangle((x, top, x + w, int(0.66 * height)), fill=_muted(rng, 70, 190))
        for _ in range(int(rng.integers(2, 6))):
            wx = x + rng.uniform(0.05, 0.8) * w
            wy = top + rng.uniform(0.05, 0.7) * (0.66 * height - top)
            draw.rectangle(
                (wx, wy, wx + 0.12 * w, wy + 0.1 * height), fill=_muted(rng, 30, 110)
            )
        x += w
    draw.rectangle((0, int(0.66 * height), width, height), fill=_muted(rng, 90, 160))
    draw.line(
        (0, horizon + 0.3 * height, width, horizon + 0.3 * height),
        width=2,
        fill=_muted(rng, 40, 90),
    )
    for _ in range(int(rng.integers(1, 4))):  # poles and bushes at the back
        px = rng.uniform(0, width)
        if rng.random() < 0.5:
            draw.rectangle(
                (px, 0.1 * height, px + 3, 0.68 * height), fill=_muted(rng, 30, 80)
            )
        else:
            r = rng.uniform(0.04, 0.09) * height
            draw.ellipse(
                (px - 2 * r, 0.64 * height - r, px + 2 * r, 0.68 * height),
                fill=(
                    int(rng.integers(30, 70)),
                    int(rng.integers(90, 140)),
                    int(rng.integers(30, 70)),
                ),
            )
    return np.asarray(image, dtype=np.uint8)


def _height_at(feet_y: float, frame_h: int) -> float:
    """Person height (pixels) standing at ``feet_y`` (ground-plane perspective)."""
    near = _FEET_NEAR * frame_h - _HORIZON * frame_h
    return _HEIGHT_NEAR * frame_h * (feet_y - _HORIZON * frame_h) / near


def _schedule(
    rng: np.random.Generator,
    appearances: List[int],
    num_frames: int,
    fps: float,
    frame_h: int,
    frame_w: int,
) -> List[Dict]:
    """The walks of one camera: who, from which frame, along which path."""
    walks = []
    for pid in appearances:
        kind = 'across' if rng.random() < 0.75 else 'depth'
        first = int(rng.integers(0, max(1, int(0.6 * num_frames))))
        if kind == 'across':
            feet = rng.uniform(_FEET_FAR, _FEET_NEAR) * frame_h
            h = _height_at(feet, frame_h)
            direction = 1.0 if rng.random() < 0.5 else -1.0
            half_w = 0.2 * h
            x0 = -half_w if direction > 0 else frame_w + half_w
            speed = rng.uniform(0.7, 1.1) * h  # about 1.2-1.9 m/s
            walks.append(
                dict(
                    id=pid,
                    kind=kind,
                    first=first,
                    x0=x0,
                    y0=feet,
                    vx=direction * speed / fps,
                    vy=0.0,
                    view='right' if direction > 0 else 'left',
                )
            )
        else:
            towards = rng.random() < 0.5
            far, near = _FEET_FAR * frame_h, _FEET_NEAR * frame_h
            y0 = far if towards else near
            speed = rng.uniform(0.12, 0.2) * frame_h  # px/s along the ground row
            walks.append(
                dict(
                    id=pid,
                    kind=kind,
                    first=first,
                    x0=rng.uniform(0.2, 0.8) * frame_w,
                    y0=y0,
                    vx=rng.uniform(-0.04, 0.04) * frame_h / fps,
                    vy=(speed if towards else -speed) / fps,
                    view='front' if towards else 'back',
                )
            )
    return walks


def _position(walk: Dict, frame: int, frame_h: int, frame_w: int):
    """(centre x, feet y, height) of a walk at ``frame``, or None if it is
    not in the scene (not yet started, walked out, or reached its end)."""
    t = frame - walk['first']
    if t < 0:
        return None
    x = walk['x0'] + walk['vx'] * t
    y = walk['y0'] + walk['vy'] * t
    if not (_FEET_FAR * frame_h - 1e-6 <= y <= _FEET_NEAR * frame_h + 1e-6):
        return None
    h = _height_at(y, frame_h)
    if x + 0.3 * h < 0 or x - 0.3 * h > frame_w:
        return None
    return x, y, h


def _sprite(identity: Dict, view: str, height: float, rng: np.random.Generator):
    """The person at ``height`` pixels tall: RGB array and boolean mask,
    cropped to the person's extent."""
    crop_h = max(48, int(round(height / _CROP_MARGIN)))
    crop_w = max(16, int(round(crop_h * 48 / 128)))
    image, mask, _ = render_person(
        identity, rng, (crop_h, crop_w), view=view, occlusion=False
    )
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    image = image.crop((x0, y0, x1, y1))
    mask_img = Image.fromarray((mask[y0:y1, x0:x1] > 0).astype(np.uint8) * 255)
    scale = height / (y1 - y0)
    size = (max(1, int(round((x1 - x0) * scale))), max(1, int(round(height))))
    image = image.resize(size, Image.BILINEAR)
    mask_img = mask_img.resize(size, Image.NEAREST)
    return np.asarray(image), np.asarray(mask_img) > 127


def _render_video(
    path: str,
    gt_path: str,
    identities: Dict[int, Dict],
    walks: List[Dict],
    seed: int,
    camera: int,
    num_frames: int,
    fps: int,
    frame_h: int,
    frame_w: int,
    codec: str,
    bar,
) -> Dict[int, List[int]]:
    """Render, encode and write one camera's video and its gt file.

    Returns:
        dict[int, list[int]]: id -> [first frame, last frame] (1-based) of the
        rows written for it.
    """
    import av

    scene = _draw_scene(
        np.random.default_rng([seed, _SCENE_STREAM, camera]), frame_h, frame_w
    )
    rows: List[str] = []
    spans: Dict[int, List[int]] = {}
    container = av.open(path, 'w', format='mp4')
    try:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frame_w, frame_h
        stream.pix_fmt = 'yuv420p'
        stream.codec_context.thread_count = 1  # deterministic bytes
        stream.bit_rate = 2_000_000
        for frame in range(num_frames):
            canvas = scene.astype(np.int16)
            owner = np.full((frame_h, frame_w), -1, dtype=np.int32)
            placed = []
            active = []
            for w_idx, walk in enumerate(walks):
                pos = _position(walk, frame, frame_h, frame_w)
                if pos is not None:
                    active.append((pos[1], w_idx, pos))
            for _, w_idx, (cx, feet, h) in sorted(active):  # far to near
                walk = walks[w_idx]
                rng = np.random.default_rng(
                    [seed, _PERSON_STREAM, camera, w_idx, frame]
                )
                rgb, mask = _sprite(identities[walk['id']], walk['view'], h, rng)
                sh, sw = mask.shape
                left = int(round(cx - sw / 2))
                top = int(round(feet - sh))
                fx0, fy0 = max(0, left), max(0, top)
                fx1, fy1 = min(frame_w, left + sw), min(frame_h, top + sh)
                if fx1 <= fx0 or fy1 <= fy0:
                    continue
                sub = mask[fy0 - top : fy1 - top, fx0 - left : fx1 - left]
                canvas[fy0:fy1, fx0:fx1][sub] = rgb[
                    fy0 - top : fy1 - top, fx0 - left : fx1 - left
                ][sub]
                owner[fy0:fy1, fx0:fx1][sub] = w_idx
                placed.append((w_idx, int(mask.sum()), (fx0, fy0, fx1, fy1)))
            noise_rng = np.random.default_rng([seed, _FRAME_STREAM, camera, frame])
            canvas = canvas + noise_rng.normal(0, 2.0, canvas.shape).astype(np.int16)
            pixels = np.clip(canvas, 0, 255).astype(np.uint8)
            for w_idx, area, (x0, y0, x1, y1) in placed:
                visible = int((owner[y0:y1, x0:x1] == w_idx).sum())
                if visible == 0:
                    continue
                pid = walks[w_idx]['id']
                rows.append(
                    f'{frame + 1},{pid},{x0},{y0},{x1 - x0},{y1 - y0},1,1,'
                    f'{visible / area:.4f}'
                )
                span = spans.setdefault(pid, [frame + 1, frame + 1])
                span[1] = frame + 1
            video_frame = av.VideoFrame.from_ndarray(pixels, format='rgb24')
            for packet in stream.encode(video_frame):
                container.mux(packet)
            bar.update(1)
        for packet in stream.encode():
            container.mux(packet)
    finally:
        container.close()
    with open(gt_path, 'w', encoding='utf-8') as f:
        f.write('\n'.join(rows) + ('\n' if rows else ''))
    return spans


def _check_args(size, seed):
    if size not in VIDEO_SIZES:
        raise ValueError(
            f'unknown SynthPedes video size {size!r}; choose one of '
            f'{sorted(VIDEO_SIZES)}'
        )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f'seed must be a non-negative integer, got {seed!r}')


def _existing(out_dir: str, wanted: Dict) -> bool:
    return existing_output(
        out_dir, wanted, _IDENTITY_KEYS, VIDEO_META_FILE, 'SynthPedes video set'
    )


def generate_synthpedes_videos(
    out_dir: str,
    size: str = 'small',
    seed: int = 0,
    progress: bool = True,
) -> str:
    """Generate a SynthPedes video set into ``out_dir``.

    Args:
        out_dir (str): Target folder: new, empty, or already holding this
            very set (then returned unchanged).
        size (str): ``'tiny'`` (tests: 2 cameras x 4 s) or ``'small'`` (3
            cameras x 20 s); both 10 fps at 320 x 180 (see
            :data:`VIDEO_SIZES`).
        seed (int): Non-negative seed; the output is a function of the seed
            and the size only.
        progress (bool): Show a progress bar. Defaults to True.

    Returns:
        str: ``out_dir`` (absolute).

    Raises:
        ValueError: Bad arguments, or ``out_dir`` holds anything else
            (nothing in it is touched).

    Example:
        >>> root = generate_synthpedes_videos('data/synthpedes_videos', 'small')
    """
    _check_args(size, seed)
    preset = VIDEO_SIZES[size]
    seed = int(seed)
    num_cameras, fps = preset['num_cameras'], preset['fps']
    frame_h, frame_w = preset['frame_size']
    num_frames = int(round(preset['duration'] * fps))
    num_ids = preset['num_ids']
    meta = dict(
        generator_version=VIDEO_GENERATOR_VERSION,
        size=size,
        seed=seed,
        num_ids=num_ids,
        num_cameras=num_cameras,
    )
    out_dir = osp.abspath(out_dir)
    if _existing(out_dir, meta):
        return out_dir

    identities = {
        pid: sample_identity(np.random.default_rng([seed, _ID_STREAM, pid]))
        for pid in range(1, num_ids + 1)
    }
    schedule_rng = np.random.default_rng([seed, _SCHEDULE_STREAM])
    per_camera: Dict[int, List[int]] = {c: [] for c in range(1, num_cameras + 1)}
    for pid in identities:
        k = int(
            schedule_rng.integers(1, min(preset['max_appearances'], num_cameras) + 1)
        )
        for cam in sorted(schedule_rng.choice(num_cameras, size=k, replace=False)):
            per_camera[int(cam) + 1].append(pid)
    start_offsets = sorted(
        int(v) for v in schedule_rng.integers(0, 180, size=num_cameras)
    )

    parent = osp.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp_dir = osp.join(parent, f'.{osp.basename(out_dir)}.partial-{os.getpid()}')
    if osp.exists(tmp_dir):
        shutil.rmtree(tmp_dir)
    os.makedirs(osp.join(tmp_dir, VIDEO_DIR))
    os.makedirs(osp.join(tmp_dir, GT_DIR))
    codec = _pick_codec()
    bar = tqdm(
        total=num_cameras * num_frames,
        desc='SynthPedes videos',
        unit='frame',
        disable=not progress,
    )
    try:
        videos = []
        for cam in range(1, num_cameras + 1):
            walks = _schedule(
                np.random.default_rng([seed, _SCHEDULE_STREAM, cam]),
                per_camera[cam],
                num_frames,
                fps,
                frame_h,
                frame_w,
            )
            video_rel = f'{VIDEO_DIR}/cam{cam}.mp4'
            gt_rel = f'{GT_DIR}/cam{cam}.txt'
            spans = _render_video(
                osp.join(tmp_dir, video_rel),
                osp.join(tmp_dir, gt_rel),
                identities,
                walks,
                seed,
                cam,
                num_frames,
                fps,
                frame_h,
                frame_w,
                codec,
                bar,
            )
            start = START_TIME + timedelta(seconds=start_offsets[cam - 1])
            videos.append(
                dict(
                    file=video_rel,
                    gt=gt_rel,
                    camera=str(cam),
                    start_time=start.isoformat(),
                    fps=fps,
                    num_frames=num_frames,
                    width=frame_w,
                    height=frame_h,
                    people=[
                        dict(id=pid, first_frame=s[0], last_frame=s[1])
                        for pid, s in sorted(spans.items())
                    ],
                )
            )
        people = []
        for pid, ident in identities.items():
            captions, _ = write_captions(
                ident,
                {'view': 'front'},
                np.random.default_rng([seed, _CAPTION_STREAM, pid]),
            )
            attributes = {k: v for k, v in ident.items() if k != 'rgb'}
            people.append(dict(id=pid, captions=captions, attributes=attributes))
        dump_json(
            dict(identities=people, videos=videos), osp.join(tmp_dir, VIDEO_ANN_FILE)
        )
        meta.update(
            num_videos=num_cameras,
            fps=fps,
            frame_size=[frame_h, frame_w],
            num_frames=num_frames,
            codec=codec,
            files=dict(annotations=VIDEO_ANN_FILE, videos=VIDEO_DIR, gt=GT_DIR),
        )
        dump_json(meta, osp.join(tmp_dir, VIDEO_META_FILE))  # last
        try:
            if osp.isdir(out_dir):
                os.rmdir(out_dir)
            os.rename(tmp_dir, out_dir)
        except OSError:
            if not _existing(out_dir, meta):
                raise
            shutil.rmtree(tmp_dir, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    finally:
        bar.close()
    return out_dir
