"""``TBPSRunner``: MMEngine's Runner, able to read its own training checkpoints.

torch >= 2.6 loads with ``weights_only=True`` by default, and MMEngine 0.10.7's
training checkpoints (``epoch_N.pth``) hold a ``HistoryBuffer``, numpy arrays
and dtypes, which that refuses: ``load_from`` and ``resume`` break. The fix is
scoped to the one place that reads such files, the Runner's
``load_checkpoint`` (used by ``load_from``, ``resume`` and ``--resume auto``):

* a file that loads weights-only (a published model) is loaded that way;
* otherwise, for a *local* file the user handed to the Runner (``load_from``,
  ``--resume PATH``) or that the Runner wrote itself in its work dir
  (``--resume auto``), the file is unpickled in full, as MMEngine did before
  torch 2.6. Remote files keep torch's default.

Nothing else in the process changes: ``torch.load`` elsewhere, MMEngine's
checkpoint loader registry and model ``init_cfg`` weights keep their safe
defaults.
"""

import os.path as osp
import pickle
from typing import Callable, Union

import torch
from mmengine.model import is_model_wrapper
from mmengine.runner import Runner
from mmengine.runner.checkpoint import _load_checkpoint, _load_checkpoint_to_model

from tbps_mm.registry import RUNNERS


def load_training_checkpoint(
    filename: str, map_location: Union[str, Callable, None] = 'cpu'
) -> dict:
    """Load a checkpoint the Runner was asked to read.

    Args:
        filename (str): Local path or any URL MMEngine's loader understands.
        map_location (str | callable, optional): As for :func:`torch.load`.

    Returns:
        dict: The checkpoint (``state_dict``, ``meta``, ``optimizer``, ...).

    Raises:
        FileNotFoundError: A local path that does not exist.

    Example:
        >>> ckpt = load_training_checkpoint('work_dirs/tbps_synth/epoch_1.pth')
        >>> ckpt['meta']['epoch']
        1
    """
    if '://' in filename:
        return _load_checkpoint(filename, map_location=map_location)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint file "{filename}" does not exist')
    try:
        return torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        # An MMEngine training checkpoint: the user named it (load_from /
        # --resume PATH) or the Runner wrote it in its work dir.
        return torch.load(filename, map_location=map_location, weights_only=False)


@RUNNERS.register_module()
class TBPSRunner(Runner):
    """The MMEngine Runner, with checkpoint loading that works on torch >= 2.6.

    Select it with ``runner_type = 'TBPSRunner'`` (tbps_mm's default runtime
    does). Everything else is MMEngine's ``Runner``.
    """

    def load_checkpoint(
        self,
        filename: str,
        map_location: Union[str, Callable] = 'cpu',
        strict: bool = False,
        revise_keys: list = [(r'^module.', '')],  # noqa: B006 (MMEngine's API)
    ) -> dict:
        """Load a checkpoint into the model (see ``Runner.load_checkpoint``)."""
        checkpoint = load_training_checkpoint(filename, map_location=map_location)
        self.call_hook('after_load_checkpoint', checkpoint=checkpoint)
        model = self.model.module if is_model_wrapper(self.model) else self.model
        checkpoint = _load_checkpoint_to_model(
            model, checkpoint, strict, revise_keys=revise_keys
        )
        self._has_loaded = True
        self.logger.info(f'Load checkpoint from {filename}')
        return checkpoint
