"""``SynthPedesVideos``: the SynthPedes video set as a registered dataset.

It generates the set on first use (like ``SynthPedes``), then lists its
videos (path, camera, start time, fps) and people (captions and attributes),
and reads each video's MOTChallenge ground truth. It is what the video
benchmark and tests search; the videos go through the same ingestion
(``tools/index_video.py``) as real footage, whose camera ids and start times
come from a manifest in the same ``videos`` format.

Example:
    >>> dataset = DATASETS.build(dict(type='SynthPedesVideos',
    ...                               data_root='data/synthpedes_videos',
    ...                               size='small', seed=0))
    >>> video = dataset.videos[0]
    >>> gt = dataset.load_gt(video)  # frame -> (boxes xyxy, ids, visibility)
"""

import json
import os.path as osp
from typing import Dict, List, Tuple

import numpy as np

from tbps_mm.registry import DATASETS

from .synthpedes.video import VIDEO_ANN_FILE, generate_synthpedes_videos

__all__ = ['SynthPedesVideos', 'read_mot_ground_truth']


def read_mot_ground_truth(
    path: str,
) -> Dict[int, Tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Read a MOTChallenge ground-truth file.

    Args:
        path (str): Rows ``frame,id,x,y,w,h,active,class,visibility``
            (frames from 1); rows whose ``active`` flag is 0 are left out,
            as MOTChallenge's evaluation does.

    Returns:
        dict: frame -> ``(boxes (N, 4) xyxy, ids (N,), visibility (N,))``.

    Raises:
        FileNotFoundError: No such file.
        ValueError: A row that is not 9 numbers (file and row named).

    Example:
        >>> gt = read_mot_ground_truth('gt/cam1.txt')
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'ground-truth file "{path}" does not exist')
    rows: Dict[int, list] = {}
    with open(path, encoding='utf-8') as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.strip().split(',')
            try:
                values = [float(p) for p in parts]
            except ValueError as err:
                raise ValueError(f'{path}, row {number}: not numbers ({err})') from err
            if len(values) < 9:
                raise ValueError(
                    f'{path}, row {number}: {len(values)} fields, expected 9 '
                    '(frame,id,x,y,w,h,active,class,visibility)'
                )
            frame, pid, x, y, w, h, active, _, vis = values[:9]
            if active == 0:
                continue
            rows.setdefault(int(frame), []).append((x, y, x + w, y + h, pid, vis))
    out = {}
    for frame, items in rows.items():
        arr = np.asarray(items, dtype=np.float64)
        out[frame] = (arr[:, :4], arr[:, 4].astype(np.int64), arr[:, 5])
    return out


@DATASETS.register_module()
class SynthPedesVideos:
    """The SynthPedes video set (generated on first use).

    Args:
        data_root (str): The set's folder.
        size (str): ``'tiny'`` or ``'small'``. Defaults to ``'small'``.
        seed (int): Generation seed. Defaults to 0.
        generate (bool): Generate the set when the folder holds none.
            Defaults to True.

    Attributes:
        videos (list[dict]): ``file`` (absolute path), ``gt``, ``camera``,
            ``start_time`` (ISO), ``fps``, ``num_frames``, ``width``,
            ``height``, ``people`` (id, first and last frame).
        identities (list[dict]): ``id``, ``captions``, ``attributes``.

    Example:
        >>> SynthPedesVideos('data/synthpedes_videos_tiny', size='tiny').videos
    """

    def __init__(
        self, data_root: str, size: str = 'small', seed: int = 0, generate: bool = True
    ) -> None:
        ann = osp.join(data_root, VIDEO_ANN_FILE)
        if generate:
            generate_synthpedes_videos(data_root, size=size, seed=seed)
        elif not osp.isfile(ann):
            raise FileNotFoundError(f'no SynthPedes video set in "{data_root}"')
        self.data_root = osp.abspath(data_root)
        with open(osp.join(self.data_root, VIDEO_ANN_FILE), encoding='utf-8') as f:
            content = json.load(f)
        self.videos: List[Dict] = []
        for video in content['videos']:
            video = dict(video)
            video['file'] = osp.join(self.data_root, video['file'])
            video['gt'] = osp.join(self.data_root, video['gt'])
            self.videos.append(video)
        self.identities: List[Dict] = content['identities']

    def load_gt(
        self, video: Dict
    ) -> Dict[int, Tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """The ground truth of one of :attr:`videos` (see
        :func:`read_mot_ground_truth`)."""
        return read_mot_ground_truth(video['gt'])

    def manifest(self) -> List[Dict]:
        """The videos as an ingestion manifest: ``file``, ``camera``,
        ``start_time``."""
        return [
            dict(file=v['file'], camera=v['camera'], start_time=v['start_time'])
            for v in self.videos
        ]
