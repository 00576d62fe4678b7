"""Video decoding with PyAV: frames at a chosen sampling rate, clear errors.

:func:`read_video_frames` yields :class:`VideoFrame` s (RGB ``uint8`` arrays
with their decoded frame index and time) sampled at ``sample_fps``, and
:func:`probe_video` reads a video's stream facts without decoding it.

Bad input:

- a missing file is a ``FileNotFoundError``; a file FFmpeg cannot open (not
  a video, a truncated MP4 whose index is gone, a file with no video
  stream) is a :class:`VideoDecodeError` naming the file;
- a file that opens but stops decoding part-way (truncated data, corrupt
  packets) yields the frames that could be read; the reader then records
  ``decoded`` / ``expected`` counts in :attr:`VideoFrameReader.problem` and
  warns once with them (``strict=True`` raises instead). A file from which
  no frame at all can be decoded is an error.

Written on PyAV (FFmpeg); frame selection by time is ours.

Example:
    >>> reader = VideoFrameReader('cam1.mp4', sample_fps=5)
    >>> for frame in reader:
    ...     frame.index, frame.time, frame.image.shape
    (0, 0.0, (180, 320, 3))
"""

import os.path as osp
from typing import Iterator, NamedTuple, Optional

import numpy as np
from mmengine.logging import print_log

__all__ = ['VideoDecodeError', 'VideoFrame', 'VideoFrameReader', 'probe_video']


class VideoDecodeError(ValueError):
    """A video that cannot be opened or decoded (the message names it)."""


class VideoFrame(NamedTuple):
    """One decoded frame.

    Attributes:
        index (int): 0-based index of the frame in the stream (frame
            ``index + 1`` in MOTChallenge files).
        time (float): Seconds from the start of the video.
        image (np.ndarray): (H, W, 3) RGB ``uint8``.
    """

    index: int
    time: float
    image: np.ndarray


def _open(path: str):
    import av

    if not osp.isfile(path):
        raise FileNotFoundError(f'video file "{path}" does not exist')
    try:
        container = av.open(path)
    except Exception as err:  # noqa: BLE001 - any FFmpeg failure: name the file
        raise VideoDecodeError(
            f'"{path}" is not a readable video ({type(err).__name__}: {err})'
        ) from err
    if not container.streams.video:
        container.close()
        raise VideoDecodeError(f'"{path}" has no video stream')
    return container


def probe_video(path: str) -> dict:
    """A video's stream facts, without decoding frames.

    Args:
        path (str): The video file.

    Returns:
        dict: ``fps`` (float), ``num_frames`` (int, 0 when the container
        does not say), ``duration`` (seconds, None when unknown), ``width``,
        ``height`` and ``codec``.

    Raises:
        FileNotFoundError: No such file.
        VideoDecodeError: FFmpeg cannot open it, or it has no video stream.

    Example:
        >>> probe_video('cam1.mp4')['fps']
        10.0
    """
    container = _open(path)
    try:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        duration = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1e6
        return dict(
            fps=float(rate) if rate else 0.0,
            num_frames=int(stream.frames or 0),
            duration=duration,
            width=int(stream.codec_context.width),
            height=int(stream.codec_context.height),
            codec=stream.codec_context.name,
        )
    finally:
        container.close()


class VideoFrameReader:
    """Iterate over a video's frames at a sampling rate.

    Frames are chosen by time: the first frame at or after each multiple of
    ``1 / sample_fps`` seconds, so a 25 fps video sampled at 5 fps gives
    every fifth frame and a 10 fps video sampled at 3 fps gives frames
    0, 4, 7, 10, ... (times 0, 0.4, 0.7, 1.0 s).

    Args:
        path (str): The video file.
        sample_fps (float, optional): Frames per second to keep; None (or a
            rate at or above the video's) keeps every frame.
        strict (bool): Raise :class:`VideoDecodeError` when the video stops
            decoding part-way, instead of keeping what was decoded and
            warning. Defaults to False.

    Attributes:
        decoded (int): Frames decoded so far (sampled or not).
        problem (str | None): After iteration, why decoding stopped early
            (with the counts), or None.

    Example:
        >>> frames = list(VideoFrameReader('cam1.mp4', sample_fps=2))
    """

    def __init__(
        self, path: str, sample_fps: Optional[float] = None, strict: bool = False
    ) -> None:
        if sample_fps is not None and not sample_fps > 0:
            raise ValueError(f'sample_fps must be > 0, got {sample_fps}')
        self.path = path
        self.sample_fps = sample_fps
        self.strict = strict
        self.info = probe_video(path)
        self.decoded = 0
        self.problem: Optional[str] = None

    def _fail(self, message: str) -> None:
        self.problem = message
        if self.strict or self.decoded == 0:
            raise VideoDecodeError(message)
        print_log(message, logger='current', level=30)

    def __iter__(self) -> Iterator[VideoFrame]:
        import av

        container = _open(self.path)
        self.decoded, self.problem = 0, None
        expected = self.info['num_frames']
        fps = self.info['fps'] or None
        step = None if self.sample_fps is None else 1.0 / self.sample_fps
        next_time = 0.0
        start = None
        try:
            stream = container.streams.video[0]
            stream.thread_type = 'AUTO'
            try:
                for frame in container.decode(stream):
                    index = self.decoded
                    self.decoded += 1
                    if frame.pts is not None and frame.time_base is not None:
                        time = float(frame.pts * frame.time_base)
                        start = time if start is None else start
                        time -= start  # times count from the first frame
                    elif fps:
                        time = index / fps
                    else:
                        time = float(index)
                    if step is not None:
                        if time + 1e-6 < next_time:
                            continue
                        next_time = (np.floor(time / step + 1e-6) + 1) * step
                    yield VideoFrame(index, time, frame.to_ndarray(format='rgb24'))
            except av.FFmpegError as err:
                self._fail(
                    f'"{self.path}" stopped decoding after {self.decoded} of '
                    f'{expected or "an unknown number of"} frames '
                    f'({type(err).__name__}: {err}); the frames before it are used'
                )
                return
            if self.decoded == 0:
                self._fail(f'"{self.path}": no frame could be decoded')
            elif expected and self.decoded < expected:
                self._fail(
                    f'"{self.path}" is incomplete: {self.decoded} of {expected} '
                    'frames could be decoded; the frames that were read are used'
                )
        finally:
            container.close()
