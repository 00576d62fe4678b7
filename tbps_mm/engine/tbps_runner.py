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

The reader itself is :func:`tbps_mm.models.checkpoint.load_training_checkpoint`;
this class only routes the Runner's loads through it. A published model
(``tools/model_converters/publish_model.py``) has no training-only weights
(the ID classifiers under ``losses.``): loading one, those keep the model's
initialisation and one line says so, instead of MMEngine's missing-keys
warning; evaluation and search do not use them. Nothing else in the
process changes: ``torch.load`` elsewhere, MMEngine's checkpoint loader
registry and model ``init_cfg`` weights keep their safe defaults.
"""

from typing import Callable, Union

from mmengine.model import is_model_wrapper
from mmengine.runner import Runner
from mmengine.runner.checkpoint import _load_checkpoint_to_model

from tbps_mm.models.checkpoint import (
    INFERENCE_IGNORED_PREFIXES,
    load_training_checkpoint,
)
from tbps_mm.registry import RUNNERS


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
        self._keep_training_only_weights(model, checkpoint, filename)
        checkpoint = _load_checkpoint_to_model(
            model, checkpoint, strict, revise_keys=revise_keys
        )
        self._has_loaded = True
        self.logger.info(f'Load checkpoint from {filename}')
        return checkpoint

    def _keep_training_only_weights(self, model, checkpoint: dict, filename: str):
        """Fill a published model's dropped ``losses.`` keys from ``model``."""
        state = checkpoint.get('state_dict', checkpoint)
        names = {k[7:] if k.startswith('module.') else k for k in state}
        if any(k.startswith(INFERENCE_IGNORED_PREFIXES) for k in names):
            return
        own = model.state_dict()
        absent = [k for k in own if k.startswith(INFERENCE_IGNORED_PREFIXES)]
        if not absent:
            return
        state.update({k: own[k] for k in absent})
        self.logger.info(
            f'{filename} holds no training-only weights ({", ".join(absent)}): '
            'a published model; those keep their initialisation (evaluation '
            'and search do not use them)'
        )
