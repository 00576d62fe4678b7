"""``list_image_folders``: the images of a gallery's folders, and what was not.

Walking a user's folders must neither stop at the first odd entry nor lose
one silently. Every image file (by extension, recursively) is listed with
its size and modification time, which tell an index whether it changed;
what cannot be listed is reported with its reason and counted:

* ``'dangling-link'``: a symbolic link whose target does not exist;
* ``'unreadable-folder'``: a folder whose listing fails (permissions, I/O);
* ``'unreadable'``: an image file whose status cannot be read.

Images that are listed but fail to decode are the encoder's to report
(:meth:`~tbps_mm.apis.FusedEncoder.encode_images` with ``skipped``).

Example:
    >>> listing = list_image_folders(['cam1/', 'cam2/'])
    >>> listing.counts()
    {'images': 120, 'skipped-dangling': 1, ...}
"""

import os
import os.path as osp
from typing import Dict, List, Sequence, Tuple

__all__ = ['IMAGE_EXTENSIONS', 'SKIP_KINDS', 'FolderListing', 'list_image_folders']

#: File extensions (lower case) that count as images.
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff', '.ppm')
#: Why an entry was skipped, as counted in summaries.
SKIP_KINDS = ('unreadable', 'dangling-link', 'unreadable-folder')


class FolderListing:
    """The images found under some folders, and the entries skipped.

    Attributes:
        images (dict[str, list[int]]): Image path -> ``[size, mtime_ns]``,
            in walking order (folders in the order given, entries sorted).
        skipped (list[tuple[str, str, str]]): ``(path, kind, reason)`` of
            every entry that could not be listed; ``kind`` is one of
            :data:`SKIP_KINDS`.
    """

    def __init__(self) -> None:
        self.images: Dict[str, List[int]] = {}
        self.skipped: List[Tuple[str, str, str]] = []

    def counts(self) -> Dict[str, int]:
        """``images`` and ``skipped-<kind>`` counts (every kind present)."""
        counts = dict(images=len(self.images))
        for kind in SKIP_KINDS:
            counts[f'skipped-{kind}'] = sum(k == kind for _, k, _ in self.skipped)
        return counts


def _walk(folder: str, listing: FolderListing) -> None:
    """List one folder (recursively) into ``listing``."""

    def failed(err: OSError) -> None:
        path = err.filename or folder
        listing.skipped.append(
            (path, 'unreadable-folder', f'{type(err).__name__}: {err.strerror or err}')
        )

    for root, dirs, files in os.walk(folder, onerror=failed):
        dirs.sort()
        for name in sorted(files):
            if not name.lower().endswith(IMAGE_EXTENSIONS):
                continue
            path = osp.join(root, name)
            try:
                stat = os.stat(path)
            except FileNotFoundError as err:
                kind = 'dangling-link' if osp.islink(path) else 'unreadable'
                reason = (
                    f'symbolic link to "{os.readlink(path)}", which does not exist'
                    if kind == 'dangling-link'
                    else f'{type(err).__name__}: {err.strerror or err}'
                )
                listing.skipped.append((path, kind, reason))
                continue
            except OSError as err:
                listing.skipped.append(
                    (path, 'unreadable', f'{type(err).__name__}: {err.strerror or err}')
                )
                continue
            listing.images[path] = [stat.st_size, stat.st_mtime_ns]


def list_image_folders(folders: Sequence[str]) -> FolderListing:
    """Every image under ``folders`` (recursively) and every entry skipped.

    Args:
        folders (Sequence[str]): Existing folders (paths as the caller wants
            them in the results; absolute paths give absolute results).

    Returns:
        FolderListing: The images with their size and modification time,
        and the skipped entries with their reasons.

    Raises:
        FileNotFoundError: A folder does not exist.
        ValueError: A folder that could be listed holds no image and nothing
            under it was skipped.

    Example:
        >>> listing = list_image_folders(['/data/cam1'])
        >>> [kind for _, kind, _ in listing.skipped]
        ['dangling-link']
    """
    listing = FolderListing()
    for folder in folders:
        if not osp.isdir(folder):
            raise FileNotFoundError(f'image folder "{folder}" does not exist')
        before_images, before_skipped = len(listing.images), len(listing.skipped)
        _walk(folder, listing)
        if len(listing.images) == before_images and len(listing.skipped) == (
            before_skipped
        ):
            raise ValueError(
                f'image folder "{folder}" holds no images (looked recursively '
                f'for {", ".join(IMAGE_EXTENSIONS)})'
            )
    return listing
