"""Checkpoints of tbps_mm models: reading, checking, loading and publishing.

This module is the one home of checkpoint handling; every caller goes
through it:

* :func:`read_weights_file` / :func:`save_weights_file` /
  :func:`load_tbps_weights`: read (or write) a
  *weights-only* file (``.safetensors``, or a state dict /
  ``{'state_dict': ...}`` that :func:`torch.load` reads with
  ``weights_only=True``) and load it into a model, refusing files that need
  full unpickling and reporting missing, unexpected and mis-shaped keys by
  name;
* :func:`install_shape_check`: load-state-dict hooks that make *every* load
  path (``nn.Module.load_state_dict``, MMEngine's ``load_checkpoint`` used by
  ``load_from`` and by ``init_cfg=dict(type='Pretrained')``) raise a
  :class:`CheckpointMismatchError` for parameters whose shape does not fit,
  where MMEngine alone would log a warning and leave those parameters at
  their random initialisation;
* :func:`load_checkpoint_file`: the one reader of every checkpoint file any
  entry point loads (``tools/test.py``, ``tools/train.py`` ``load_from`` /
  ``resume``, publishing, search, serving, the inferencer, analysis tools and
  benchmarks). It never executes code from a file: it unpickles with torch's
  weights-only unpickler and an explicit allow-list of the few MMEngine /
  numpy types an MMEngine training checkpoint holds
  (:data:`TRAINING_CHECKPOINT_GLOBALS`), scoped to the one call; anything
  else is refused with :class:`UnsafeCheckpointError` naming the type. Full
  unpickling happens only when the caller passes ``trust=True``
  (``--trust-checkpoint`` on the tools), for a file the user trusts;
* :func:`load_training_checkpoint`: an MMEngine training checkpoint
  (``epoch_N.pth``) for the Runner's ``load_from`` / ``resume`` and for
  publishing, read through :func:`load_checkpoint_file`;
* :func:`publish_weights`: a training checkpoint to a shareable weights-only
  file named with its SHA-256 prefix (MMPretrain's convention).

Written by hand because neither MMEngine nor torch offers it: torch raises on
shape mismatches but MMEngine's loader (``strict=False``) only logs them,
neither reads safetensors files with a weights-only guarantee in one call,
and MMEngine 0.10.7's loader predates torch's weights-only default. Its
training checkpoints pickle ``HistoryBuffer``'s statistics as
``getattr(HistoryBuffer, 'min')`` and numpy scalars through
``_codecs.encode``: the allow-list maps those two globals to narrow stand-ins
that accept exactly those uses, never the builtins themselves.
The checks run *after* a module's own load hooks, so adaptations such as
MMPretrain's position-embedding resize still apply.
"""

import codecs
import hashlib
import io
import os
import os.path as osp
import pickle
import re
import tempfile
from typing import (
    Callable,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)

import torch
from torch import Tensor, nn

__all__ = [
    'CheckpointMismatchError',
    'INFERENCE_IGNORED_PREFIXES',
    'TRUST_CHECKPOINT_HELP',
    'UnsafeCheckpointError',
    'check_checkpoint_keys',
    'file_sha256',
    'install_shape_check',
    'load_checkpoint_file',
    'load_tbps_weights',
    'load_training_checkpoint',
    'training_checkpoint_globals',
    'publish_weights',
    'register_mmengine_loader',
    'read_weights_file',
    'save_weights_file',
]

#: Keys of a model's state dict that inference never needs: the ID
#: classifiers, whose size depends on the training set.
INFERENCE_IGNORED_PREFIXES = ('losses.',)

_Mismatch = Tuple[str, Tuple[int, ...], Tuple[int, ...]]

# Hints for the keys users most often get wrong, matched by substring.
_KEY_HINTS = (
    (
        'classifier',
        'the ID classifier has one row per training identity: set the ID '
        "loss's num_classes to the checkpoint's identity count (or drop the "
        "classifier with ignore_prefixes=('losses.',) for inference)",
    ),
    ('part_queries', 'the number of part queries (num_parts, K) differs'),
    ('pos_embed', 'the image size / patch grid differs'),
    ('token_embedding', 'the text vocabulary size differs'),
    ('word_embeddings', 'the text vocabulary size differs'),
)


#: Help text of the tools' ``--trust-checkpoint`` flag.
TRUST_CHECKPOINT_HELP = (
    'unpickle the checkpoint in full, as torch.load(weights_only=False) does: '
    'ONLY for a file you trust, since a pickle can run any code. Without it, '
    'files holding anything beyond tensors and the types MMEngine training '
    'checkpoints hold are refused'
)


class CheckpointMismatchError(ValueError):
    """Raised when a checkpoint's keys or shapes do not fit the model."""


class UnsafeCheckpointError(ValueError):
    """Raised for a checkpoint whose unpickling could run code.

    The message names the file and the type (or callable) it needs.
    """


# The methods HistoryBuffer pickles by reference, as getattr(cls, name).
_HISTORY_BUFFER_METHODS = ('min', 'max', 'current', 'mean')


def _restricted_getattr(obj, name, *default):
    """``getattr`` for the one use MMEngine checkpoints make of it."""
    from mmengine.logging import HistoryBuffer

    if obj is HistoryBuffer and name in _HISTORY_BUFFER_METHODS and not default:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'builtins.getattr({getattr(obj, "__qualname__", type(obj).__name__)}, '
        f'{name!r})'
    )


def _restricted_encode(obj, encoding='utf-8', errors='strict'):
    """``_codecs.encode`` for the one use numpy pickles make of it."""
    if isinstance(obj, str) and encoding == 'latin1' and errors == 'strict':
        return codecs.encode(obj, 'latin1')
    raise pickle.UnpicklingError(f'_codecs.encode(..., {encoding!r})')


def _restricted_bytes(*args):
    """``bytes()`` for the one use numpy pickles make of it: the empty data of
    an empty array (``b''`` is pickled as a call of ``bytes`` without
    arguments)."""
    if args:
        raise pickle.UnpicklingError('builtins.bytes with arguments')
    return b''


def training_checkpoint_globals() -> list:
    """The allow-list of :func:`load_checkpoint_file`, beyond torch's own.

    What MMEngine 0.10.7 training checkpoints hold besides tensors, dicts,
    lists and numbers: the message hub's ``HistoryBuffer`` (and the four
    statistics methods it pickles by reference), numpy arrays, scalars and
    dtypes (numpy 1 and 2 module names), and ``collections.Counter``
    (``MultiStepLR``'s milestones). ``getattr``, ``_codecs.encode`` and
    ``bytes`` (empty arrays' data) are narrow stand-ins, not the builtins.

    Returns:
        list: Entries for ``torch.serialization.safe_globals``.

    Example:
        >>> names = [g[1] for g in training_checkpoint_globals()
        ...          if isinstance(g, tuple)]
        >>> 'builtins.getattr' in names
        True
    """
    import collections

    import numpy as np
    from mmengine.logging import HistoryBuffer

    try:
        from numpy._core import multiarray
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray
    dtype_classes = [
        cls
        for cls in vars(getattr(np, 'dtypes', object)).values()
        if isinstance(cls, type) and issubclass(cls, np.dtype)
    ]
    entries = [HistoryBuffer, np.ndarray, np.dtype, collections.Counter]
    entries += dtype_classes
    for module in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        entries.append((multiarray._reconstruct, f'{module}._reconstruct'))
        entries.append((multiarray.scalar, f'{module}.scalar'))
    entries.append((_restricted_getattr, 'builtins.getattr'))
    entries.append((_restricted_encode, '_codecs.encode'))
    entries.append((_restricted_bytes, 'builtins.bytes'))
    return entries


_REFUSED = (
    re.compile(r'GLOBAL (\S+) was not an allowed global'),
    re.compile(r'unsupported GLOBAL (\S+) whose module'),
    re.compile(r'unrecognized function (.+)$'),
    re.compile(r'only create new object for .* but got (.+)$'),
    re.compile(r'allowlisted via `add_safe_globals`, but got (.+)$'),
)


def _refused_type(err: Exception) -> Optional[str]:
    """The type or callable torch's weights-only unpickler refused, if any."""
    for pattern in _REFUSED:
        for line in str(err).splitlines():
            found = pattern.search(line)
            if found:
                return found.group(1).strip().rstrip('.')
    return None


def load_checkpoint_file(
    filename: str,
    map_location: Union[str, Callable, None] = 'cpu',
    trust: bool = False,
) -> object:
    """Read any checkpoint file without running code from it.

    The one reader behind every entry point. ``.safetensors`` files are
    read with safetensors (``{'state_dict': ...}`` comes back). Other files
    (local paths, or URLs MMEngine's file backends read) are unpickled by
    torch's weights-only unpickler with :func:`training_checkpoint_globals`
    allowed for this call only (``torch.serialization.safe_globals``), so a
    published state dict and an MMEngine training checkpoint both load, and a
    file that needs any other type or callable is refused with the name of
    what it needs.

    Args:
        filename (str): A local path or a URL (``http(s)://`` ...).
        map_location (str | callable, optional): As for :func:`torch.load`.
        trust (bool): Unpickle in full (``torch.load(weights_only=False)``):
            only for a file the user trusts (``--trust-checkpoint``).
            Defaults to False.

    Returns:
        object: What the file holds (a dict for every valid checkpoint).

    Raises:
        FileNotFoundError: A local path that does not exist.
        UnsafeCheckpointError: The file needs a type or callable outside the
            allow-list (and ``trust`` is False).
        CheckpointMismatchError: The file is no pickle torch can read.

    Example:
        >>> ckpt = load_checkpoint_file('work_dirs/tbps_synth/epoch_1.pth')
        >>> sorted(ckpt)[:2]
        ['message_hub', 'meta']
    """
    remote = '://' in filename
    if not remote and not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint file "{filename}" does not exist')
    if filename.endswith('.safetensors'):
        from safetensors.torch import load as load_bytes
        from safetensors.torch import load_file

        if remote:
            from mmengine.fileio import get

            return dict(state_dict=load_bytes(get(filename)))
        return dict(state_dict=load_file(filename, device='cpu'))
    if remote:
        from mmengine.fileio import get

        source = io.BytesIO(get(filename))
    else:
        source = filename
    if trust:
        return torch.load(source, map_location=map_location, weights_only=False)
    try:
        with torch.serialization.safe_globals(training_checkpoint_globals()):
            return torch.load(source, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        refused = _refused_type(err)
        if refused is None:  # not a pickle torch can read at all
            reason = str(err).split('WeightsUnpickler error:', 1)[-1].strip()
            raise CheckpointMismatchError(
                f'checkpoint file "{filename}" is not a checkpoint torch can '
                f'read ({(reason.splitlines() or ["unreadable"])[0][:200]})'
            ) from None
        raise UnsafeCheckpointError(
            f'checkpoint file "{filename}" is refused: it needs {refused}, '
            'which is neither a tensor nor a type that tbps_mm / MMEngine '
            'checkpoints hold, and unpickling it could run code. Publish '
            'models as .safetensors (publish_model.py); if you trust this '
            'file, pass --trust-checkpoint (trust=True).'
        ) from None


def _hint(key: str) -> str:
    for pattern, hint in _KEY_HINTS:
        if pattern in key:
            return f'  ({hint})'
    return ''


def _format_mismatches(mismatches: Sequence[_Mismatch], source: str) -> str:
    lines = [
        f'checkpoint {source} does not fit the model: {len(mismatches)} '
        'parameter(s) have a different shape (checkpoint vs model):'
    ]
    for key, ckpt_shape, model_shape in mismatches:
        lines.append(
            f'  {key}: {tuple(ckpt_shape)} vs {tuple(model_shape)}{_hint(key)}'
        )
    return '\n'.join(lines)


def _format_keys(keys: Sequence[str], limit: int = 30) -> str:
    shown = ', '.join(keys[:limit])
    more = len(keys) - limit
    return shown + (f', ... ({more} more)' if more > 0 else '')


class _ShapeCheck:
    """The load hooks of one model, sharing the mismatches of one load.

    A plain object (not closures) so that a model carrying the hooks can
    still be pickled or deep-copied.
    """

    def __init__(self) -> None:
        self.active = False
        self.mismatches: List[_Mismatch] = []

    def _report(self, module: nn.Module, found: List[_Mismatch]) -> None:
        if self.active:
            self.mismatches.extend(found)
        elif found:
            raise CheckpointMismatchError(
                _format_mismatches(found, f'loaded into {type(module).__name__}')
            )

    def root_pre_hook(self, module, state_dict, prefix, *args) -> None:
        """A load starting at the root: collect until its end."""
        self.active = True
        self.mismatches = []

    def early_pre_hook(self, module, state_dict, prefix, *args) -> None:
        """Before a module's own hooks, which may adapt a tensor's token count
        (position-embedding resize) but not its rank or width: such misfits
        are taken out so that those hooks do not fail obscurely."""
        found = [
            mismatch
            for mismatch in _own_mismatches(module, state_dict, prefix)
            if len(mismatch[1]) != len(mismatch[2])
            or mismatch[1][-1:] != mismatch[2][-1:]
        ]
        for key, _, _ in found:
            del state_dict[key]
        self._report(module, found)

    def module_pre_hook(self, module, state_dict, prefix, *args) -> None:
        """After a module's own hooks: every remaining shape mismatch."""
        self._report(module, _own_mismatches(module, state_dict, prefix))

    def root_post_hook(self, module, incompatible_keys) -> None:
        """The end of a load that started at the root: raise if anything."""
        found, self.mismatches, self.active = self.mismatches, [], False
        if found:
            raise CheckpointMismatchError(
                _format_mismatches(found, f'loaded into {type(module).__name__}')
            )


def _own_mismatches(
    module: nn.Module, state_dict: Mapping, prefix: str
) -> List[_Mismatch]:
    """Shape mismatches between ``state_dict`` and ``module``'s own tensors."""
    found = []
    tensors = list(module._parameters.items()) + [
        (name, buf)
        for name, buf in module._buffers.items()
        if name not in module._non_persistent_buffers_set
    ]
    for name, tensor in tensors:
        key = prefix + name
        if tensor is None or key not in state_dict:
            continue
        value = state_dict[key]
        if isinstance(value, Tensor) and value.shape != tensor.shape:
            found.append((key, tuple(value.shape), tuple(tensor.shape)))
    return found


def install_shape_check(model: nn.Module) -> nn.Module:
    """Make every ``load_state_dict`` of ``model`` raise on shape mismatches.

    A pre-hook on every submodule (registered after the submodule's own
    hooks, so that e.g. position-embedding resizing happens first) compares
    the incoming tensors with the module's parameters and persistent buffers;
    for modules that have hooks of their own, tensors of another rank or
    width are caught before those hooks run (they adapt token counts only).
    Loads that start at ``model`` collect every mismatch and raise once at
    the end; loads into a submodule alone (``init_cfg`` with ``prefix``)
    raise at the first mismatched module. Calling it twice is harmless.

    Args:
        model (nn.Module): The model to protect.

    Returns:
        nn.Module: ``model`` itself.

    Example:
        >>> model = install_shape_check(nn.Linear(2, 3))
        >>> model.load_state_dict({'weight': torch.zeros(4, 2)}, strict=False)
        ... # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        CheckpointMismatchError: ... weight: (4, 2) vs (3, 2)
    """
    if getattr(model, '_tbps_shape_check', False):
        return model
    check = _ShapeCheck()
    # The root's pre-hook must run before its own check, and it runs before
    # any child is visited (both torch and MMEngine load parents first).
    adapting = [m for m in model.modules() if m._load_state_dict_pre_hooks]
    model.register_load_state_dict_pre_hook(check.root_pre_hook)
    for module in model.modules():
        if any(module is m for m in adapting):
            handle = module.register_load_state_dict_pre_hook(check.early_pre_hook)
            module._load_state_dict_pre_hooks.move_to_end(handle.id, last=False)
        module.register_load_state_dict_pre_hook(check.module_pre_hook)
    model.register_load_state_dict_post_hook(check.root_post_hook)
    model._tbps_shape_check = True
    return model


def read_weights_file(path: str, trust: bool = False) -> Dict[str, Tensor]:
    """Read a checkpoint file's weights into a flat state dict.

    Read through :func:`load_checkpoint_file` (safetensors, or torch's
    weights-only unpickler with the training-checkpoint allow-list), so it
    never runs code from the file. A ``{'state_dict': ...}`` wrapper (an
    MMEngine checkpoint) is unwrapped and a DDP ``module.`` prefix stripped.

    Args:
        path (str): The file.
        trust (bool): Unpickle in full (see :func:`load_checkpoint_file`).

    Returns:
        dict[str, Tensor]: The state dict.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        UnsafeCheckpointError: unpickling the file could run code.
        CheckpointMismatchError: the file holds no state dict.

    Example:
        >>> sd = read_weights_file('tbps_synth.safetensors')  # doctest: +SKIP
    """
    return _as_state_dict(load_checkpoint_file(path, trust=trust), f'"{path}"')


def save_weights_file(
    state_dict: Mapping[str, Tensor], path: str, fmt: Optional[str] = None
) -> str:
    """Write a state dict as a weights-only file :func:`read_weights_file` reads.

    Args:
        state_dict (Mapping[str, Tensor]): Parameter names to tensors.
        path (str): The output file.
        fmt (str, optional): ``'safetensors'`` or ``'pth'`` (a plain state
            dict saved with :func:`torch.save`). Defaults to the extension
            of ``path``.

    Returns:
        str: ``path``.

    Raises:
        ValueError: An unsupported format.

    Example:
        >>> save_weights_file(model.state_dict(), 'tiny.safetensors')  # doctest: +SKIP
        'tiny.safetensors'
    """
    fmt = fmt or osp.splitext(path)[1].lstrip('.')
    if fmt not in ('safetensors', 'pth'):
        raise ValueError(
            f'output "{path}": weights are written as safetensors or pth, not {fmt!r}'
        )
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    if fmt == 'safetensors':
        from safetensors.torch import save_file

        save_file(tensors, path)
    else:
        torch.save(tensors, path)
    return path


def _as_state_dict(obj, source: str) -> Dict[str, Tensor]:
    if isinstance(obj, Mapping) and 'state_dict' in obj:
        obj = obj['state_dict']
    if not isinstance(obj, Mapping) or not all(
        isinstance(v, Tensor) for v in obj.values()
    ):
        raise CheckpointMismatchError(
            f'checkpoint {source} holds no state dict (expected a mapping of '
            "parameter names to tensors, or {'state_dict': ...})"
        )
    return {(k[7:] if k.startswith('module.') else k): v for k, v in obj.items()}


def _drop_prefixes(keys: Iterable[str], prefixes: Sequence[str]) -> List[str]:
    return [k for k in keys if not any(k.startswith(p) for p in prefixes)]


def check_checkpoint_keys(
    model_keys: Iterable[str],
    checkpoint_keys: Iterable[str],
    source: str,
    ignore_prefixes: Sequence[str] = (),
    strict: bool = True,
) -> Tuple[List[str], List[str]]:
    """Compare a checkpoint's keys with a model's; raise on any misfit.

    ``num_batches_tracked`` counters and keys under ``ignore_prefixes`` (e.g.
    the training-only :data:`INFERENCE_IGNORED_PREFIXES`: ID classifiers and
    SDM temperatures) are left out of the comparison; a DDP ``module.``
    prefix is stripped from the checkpoint's keys.

    Args:
        model_keys (Iterable[str]): The model's state-dict keys.
        checkpoint_keys (Iterable[str]): The checkpoint's.
        source (str): Names the checkpoint in the error.
        ignore_prefixes (Sequence[str]): Prefixes left out on both sides.
        strict (bool): Raise when any key is missing or unexpected.

    Returns:
        tuple[list[str], list[str]]: The missing and unexpected keys.

    Raises:
        CheckpointMismatchError: ``strict`` and a key is missing or
            unexpected; the message counts them and names the first ones.

    Example:
        >>> check_checkpoint_keys(['a', 'losses.t'], ['a'], 'x.pth', ('losses.',))
        ([], [])
    """
    prefixes = tuple(ignore_prefixes)

    def kept(keys, strip=False):
        keys = (k[7:] if strip and k.startswith('module.') else k for k in keys)
        return set(
            _drop_prefixes(
                (k for k in keys if not k.endswith('num_batches_tracked')), prefixes
            )
        )

    expected, given = kept(model_keys), kept(checkpoint_keys, strip=True)
    missing = sorted(expected - given)
    unexpected = sorted(given - expected)
    if strict and (missing or unexpected):
        lines = [f'checkpoint {source} does not fit the model:']
        if missing:
            lines.append(
                f'  {len(missing)} key(s) missing from the checkpoint: '
                + _format_keys(missing, limit=8)
            )
        if unexpected:
            lines.append(
                f'  {len(unexpected)} unexpected key(s) in the checkpoint: '
                + _format_keys(unexpected, limit=8)
            )
        lines.append(
            '  (does the config match the one the checkpoint was trained '
            'with? e.g. num_parts, decoder layers, encoders, losses)'
        )
        raise CheckpointMismatchError('\n'.join(lines))
    return missing, unexpected


def load_tbps_weights(
    model: nn.Module,
    checkpoint: Union[str, Mapping[str, Tensor]],
    strict: bool = True,
    ignore_prefixes: Optional[Sequence[str]] = None,
    trust: bool = False,
) -> Dict[str, List[str]]:
    """Load ``checkpoint`` into ``model``, safely; name every misfit.

    Args:
        model (nn.Module): The model (e.g. a built ``TBPSRetriever``).
        checkpoint (str | Mapping[str, Tensor]): A ``.safetensors`` file, a
            file that ``torch.load(weights_only=True)`` reads (a state dict or
            ``{'state_dict': ...}``), or a state dict.
        strict (bool): Raise when keys are missing or unexpected. Shape
            mismatches always raise. Defaults to True.
        ignore_prefixes (Sequence[str], optional): Keys starting with any of
            these are dropped from both sides, e.g. ``('losses.',)`` to load
            a model for inference whatever its ID classifier size.
        trust (bool): Unpickle a file in full (see
            :func:`load_checkpoint_file`). Defaults to False.

    Returns:
        dict: ``missing_keys`` and ``unexpected_keys`` (empty when strict).

    Raises:
        CheckpointMismatchError: keys (strict) or shapes do not fit; the
            message names the checkpoint and every offending key with both
            shapes.

    Example:
        >>> load_tbps_weights(model, 'tbps_synth.safetensors',  # doctest: +SKIP
        ...                   ignore_prefixes=('losses.',))
    """
    if isinstance(checkpoint, str):
        source = f'"{checkpoint}"'
        state_dict = read_weights_file(checkpoint, trust=trust)
    else:
        source = '(state dict)'
        state_dict = _as_state_dict(checkpoint, source)
    prefixes = tuple(ignore_prefixes or ())
    if prefixes:
        state_dict = {
            k: state_dict[k] for k in _drop_prefixes(state_dict.keys(), prefixes)
        }
    missing, unexpected = check_checkpoint_keys(
        model.state_dict().keys(), state_dict.keys(), source, prefixes, strict
    )
    install_shape_check(model)
    try:
        model.load_state_dict(state_dict, strict=False)
    except CheckpointMismatchError as err:
        raise CheckpointMismatchError(
            str(err).replace('loaded into', f'{source} loaded into', 1)
        ) from None
    return dict(missing_keys=missing, unexpected_keys=unexpected)


def _load_local_for_mmengine(filename: str, map_location=None) -> object:
    """MMEngine's local-file checkpoint scheme, through :func:`load_checkpoint_file`."""
    return load_checkpoint_file(osp.expanduser(filename), map_location=map_location)


def register_mmengine_loader() -> None:
    """Route MMEngine's local-file checkpoint loads through the safe reader.

    ``init_cfg=dict(type='Pretrained', checkpoint=...)`` and MMEngine's
    ``load_checkpoint`` read local files through ``CheckpointLoader``'s
    default scheme; re-registering it makes those loads use
    :func:`load_checkpoint_file` too (the allow-list instead of torch's bare
    weights-only default, which refuses MMEngine's own training
    checkpoints). Called when :mod:`tbps_mm.models` is imported.
    """
    from mmengine.runner.checkpoint import CheckpointLoader

    CheckpointLoader.register_scheme(prefixes='', force=True)(_load_local_for_mmengine)


def load_training_checkpoint(
    filename: str,
    map_location: Union[str, Callable, None] = 'cpu',
    trust: bool = False,
) -> dict:
    """Load a checkpoint the Runner (or the publishing tool) was asked to read.

    :func:`load_checkpoint_file`, for the Runner's ``load_from`` / ``resume``
    (``--resume auto`` included) and for publishing: an MMEngine training
    checkpoint loads through the allow-list, a published model
    (``.safetensors`` or a state dict) as ``{'state_dict': ...}`` or as it
    was saved, and nothing runs code unless ``trust`` is True.

    Args:
        filename (str): Local path or any URL MMEngine's file backends read.
        map_location (str | callable, optional): As for :func:`torch.load`.
        trust (bool): Unpickle in full, for a file the user trusts
            (``--trust-checkpoint``). Defaults to False.

    Returns:
        dict: The checkpoint (``state_dict``, ``meta``, ``optimizer``, ...).

    Raises:
        FileNotFoundError: A local path that does not exist.
        UnsafeCheckpointError: Unpickling the file could run code.
        CheckpointMismatchError: The file does not hold a dict.

    Example:
        >>> ckpt = load_training_checkpoint('work_dirs/tbps_synth/epoch_1.pth')
        >>> ckpt['meta']['epoch']
        1
    """
    checkpoint = load_checkpoint_file(filename, map_location=map_location, trust=trust)
    if not isinstance(checkpoint, Mapping):
        raise CheckpointMismatchError(
            f'checkpoint file "{filename}" holds a {type(checkpoint).__name__}, '
            'not a checkpoint (a dict with a state_dict, or a state dict)'
        )
    return checkpoint


def file_sha256(path: str) -> str:
    """The SHA-256 hex digest of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def publish_weights(
    src: str,
    dst: str,
    drop_prefixes: Sequence[str] = INFERENCE_IGNORED_PREFIXES,
    trust: bool = False,
    check_model: Optional[nn.Module] = None,
) -> dict:
    """Turn a training checkpoint into a shareable weights-only file.

    Keeps only the model weights (no optimizer, message hub or scheduler
    state), drops keys under ``drop_prefixes``, writes ``.safetensors``
    (or a plain state dict when ``dst`` ends in ``.pth``) and renames the
    file to ``<stem>-<first 8 hex digits of its SHA-256><ext>``, as
    MMPretrain's ``publish_model.py`` does. The file is written to a
    temporary name in the output folder first, so no partial file is left.

    Args:
        src (str): A checkpoint ``tools/train.py`` wrote (``epoch_N.pth``,
            ``best_*.pth``): a mapping with ``meta`` and ``state_dict``.
        dst (str): The output path; ``.safetensors`` is appended when it has
            no extension. ``.safetensors`` and ``.pth`` are accepted.
        drop_prefixes (Sequence[str]): Keys starting with these are left out
            (default: the ID classifiers under ``losses.``, which search does
            not use). Pass ``()`` to keep every weight.
        trust (bool): Unpickle ``src`` in full, for a file the user trusts
            (see :func:`load_checkpoint_file`). Defaults to False.
        check_model (nn.Module, optional): A model built from the config the
            checkpoint was trained with: every key must fit it (besides the
            training-only ones under :data:`INFERENCE_IGNORED_PREFIXES`), or
            nothing is written.

    Returns:
        dict: ``path`` (the final file), ``sha256``, ``num_tensors`` (kept)
        and ``dropped`` (the names left out).

    Raises:
        FileNotFoundError: ``src`` does not exist.
        FileExistsError: the output (or its hashed name) exists already.
        UnsafeCheckpointError: unpickling ``src`` could run code.
        ValueError: ``src`` is not a training checkpoint, or ``dst`` has an
            unsupported extension.
        CheckpointMismatchError: ``check_model`` is given and the keys do not
            fit it.

    Example:
        >>> publish_weights('work_dirs/tbps_synth/epoch_9.pth',
        ...                 'tbps_synth.safetensors')['path']  # doctest: +SKIP
        'tbps_synth-1a2b3c4d.safetensors'
    """
    root, ext = osp.splitext(dst)
    if not ext:
        root, ext = dst, '.safetensors'
    if ext not in ('.safetensors', '.pth'):
        raise ValueError(
            f'output "{dst}": use a .safetensors (default) or .pth file name'
        )
    if osp.exists(root + ext):
        raise FileExistsError(f'output "{root + ext}" exists; choose another name')
    if src.endswith('.safetensors'):
        raise ValueError(
            f'"{src}" is a .safetensors file, i.e. published already; publish '
            'the training checkpoint tools/train.py wrote (epoch_N.pth, best_*.pth)'
        )
    try:
        checkpoint = load_training_checkpoint(src, trust=trust)
    except (UnsafeCheckpointError, FileNotFoundError):
        raise
    except Exception as err:  # noqa: BLE001 - any unreadable file: one clear error
        raise ValueError(
            f'"{src}" is not a checkpoint torch can read, so not a training '
            f'checkpoint written by tools/train.py ({type(err).__name__}: '
            f'{str(err).splitlines()[0] if str(err) else ""})'
        ) from None
    if not (
        isinstance(checkpoint, Mapping)
        and isinstance(checkpoint.get('state_dict'), Mapping)
        and isinstance(checkpoint.get('meta'), Mapping)
    ):
        keys = sorted(checkpoint) if isinstance(checkpoint, Mapping) else []
        raise ValueError(
            f'"{src}" is not a training checkpoint written by tools/train.py '
            f"(expected 'meta' and 'state_dict' entries, found {keys[:8]}); "
            'a published or weights-only file needs no publishing'
        )
    state_dict = _as_state_dict(checkpoint['state_dict'], f'"{src}"')
    if not state_dict:
        raise CheckpointMismatchError(f'checkpoint "{src}" holds no weights')
    if check_model is not None:
        check_checkpoint_keys(
            check_model.state_dict().keys(),
            state_dict.keys(),
            f'"{src}"',
            ignore_prefixes=INFERENCE_IGNORED_PREFIXES,
        )
    prefixes = tuple(drop_prefixes)
    kept = {
        k: v.detach().cpu().contiguous()
        for k, v in state_dict.items()
        if k in _drop_prefixes([k], prefixes)
    }
    dropped = sorted(set(state_dict) - set(kept))
    folder = osp.dirname(osp.abspath(root + ext))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=ext + '.tmp', dir=folder)
    os.close(fd)
    try:
        save_weights_file(kept, tmp, fmt=ext[1:])
        sha = file_sha256(tmp)
        final = f'{root}-{sha[:8]}{ext}'
        if osp.exists(final):
            raise FileExistsError(f'output "{final}" exists; choose another name')
        _readable_like_a_new_file(tmp)
        os.replace(tmp, final)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)
    return dict(path=final, sha256=sha, num_tensors=len(kept), dropped=dropped)


def _readable_like_a_new_file(path: str) -> None:
    """Give a ``mkstemp`` file (owner-only) the mode ``open()`` would give."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)
