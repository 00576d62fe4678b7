"""``TBPSRunner``: MMEngine's Runner, reading checkpoints safely on torch >= 2.6.

torch >= 2.6 loads with ``weights_only=True`` by default, and MMEngine 0.10.7's
training checkpoints (``epoch_N.pth``) hold a ``HistoryBuffer``, numpy arrays
and dtypes, which that refuses: ``load_from`` and ``resume`` break. This
Runner's ``load_checkpoint`` (used by ``load_from``, ``resume`` and
``--resume auto``) reads through
:func:`tbps_mm.models.checkpoint.load_training_checkpoint`: torch's
weights-only unpickler with an explicit allow-list of the types such files
hold, so nothing in a checkpoint can run code. A config with
``trust_checkpoint = True`` (``--trust-checkpoint`` on the tools) unpickles in
full instead, for a file the user trusts. A published model
(``tools/model_converters/publish_model.py``) has no training-only weights
(the ID classifiers under ``losses.``): loading one, those keep the model's
initialisation and one line says so, instead of MMEngine's missing-keys
warning; evaluation and search do not use them. Any other missing or
unexpected key raises a ``CheckpointMismatchError`` naming the first ones,
where MMEngine alone would log a warning and evaluate a half-random model at
chance. MMEngine's own local-file loader (``init_cfg`` weights) goes
through the same reader (:func:`tbps_mm.models.checkpoint.register_mmengine_loader`);
``torch.load`` itself keeps torch's defaults.

The Runner also fits the parameter schedulers to the train loop's length
(:func:`fit_schedule_to_run`): a phase that would begin at or after the last
epoch (or iteration) is left out and one that would end after it is cut
there, so that ``--cfg-options train_cfg.max_epochs=N`` gives a valid
schedule for every N >= 1 (MMEngine alone raises ``end should be larger than
begin`` when a run is shorter than the warm-up).
"""

import copy
from typing import Callable, List, Sequence, Union

from mmengine.model import is_model_wrapper
from mmengine.optim import _ParamScheduler
from mmengine.runner import Runner
from mmengine.runner.base_loop import BaseLoop
from mmengine.runner.checkpoint import _load_checkpoint_to_model

from tbps_mm.models.checkpoint import (
    INFERENCE_IGNORED_PREFIXES,
    check_checkpoint_keys,
    load_training_checkpoint,
)
from tbps_mm.registry import RUNNERS


def fit_schedule_to_run(
    schedulers: Sequence[dict], max_epochs: int, max_iters: int
) -> tuple:
    """Fit scheduler configs to a run of ``max_epochs`` epochs (``max_iters``
    iterations).

    Each phase is placed on the run's own axis (epochs for ``by_epoch``
    phases, iterations otherwise). A phase that begins at or after the run's
    end is left out; one whose ``end`` lies after it is cut at it; a phase
    without ``end`` keeps MMEngine's default (the run's end).

    Args:
        schedulers (Sequence[dict]): ``param_scheduler`` entries.
        max_epochs (int): The train loop's epochs.
        max_iters (int): The train loop's iterations.

    Returns:
        tuple: ``(kept, notes)``: the fitted configs (copies) and one line
        per phase that was cut or left out.

    Example:
        >>> warmup = dict(type='LinearLR', begin=0, end=5)
        >>> cosine = dict(type='CosineAnnealingLR', begin=5)
        >>> kept, notes = fit_schedule_to_run([warmup, cosine], 3, 30)
        >>> [(s['type'], s['end']) for s in kept]
        [('LinearLR', 3)]
    """
    kept: List[dict] = []
    notes: List[str] = []
    for scheduler in schedulers:
        if not isinstance(scheduler, dict):
            kept.append(scheduler)
            continue
        by_epoch = scheduler.get('by_epoch', True)
        last, unit = (max_epochs, 'epoch') if by_epoch else (max_iters, 'iteration')
        begin = scheduler.get('begin', 0)
        name = scheduler.get('type', 'scheduler')
        if begin >= last:
            notes.append(
                f'{name} begins at {unit} {begin}, at or after the last {unit} '
                f'({last}) of this run: left out'
            )
            continue
        scheduler = copy.deepcopy(scheduler)
        end = scheduler.get('end')
        if end is not None and end > last:
            notes.append(f'{name} ends at {unit} {end}: cut at {last}')
            scheduler['end'] = last
        kept.append(scheduler)
    return kept, notes


@RUNNERS.register_module()
class TBPSRunner(Runner):
    """The MMEngine Runner, with checkpoint loading that works on torch >= 2.6.

    Select it with ``runner_type = 'TBPSRunner'`` (tbps_mm's default runtime
    does). Everything else is MMEngine's ``Runner``.
    """

    def _build_param_scheduler(
        self, scheduler: Union[_ParamScheduler, dict, list], optim_wrapper
    ) -> List[_ParamScheduler]:
        """MMEngine's build, after :func:`fit_schedule_to_run`."""
        if isinstance(self._train_loop, BaseLoop):
            schedulers = scheduler if isinstance(scheduler, Sequence) else [scheduler]
            scheduler, notes = fit_schedule_to_run(
                schedulers, self.max_epochs, self.max_iters
            )
            for note in notes:
                self.logger.info(f'param_scheduler: {note}')
        return super()._build_param_scheduler(scheduler, optim_wrapper)

    def load_checkpoint(
        self,
        filename: str,
        map_location: Union[str, Callable] = 'cpu',
        strict: bool = False,
        revise_keys: list = [(r'^module.', '')],  # noqa: B006 (MMEngine's API)
    ) -> dict:
        """Load a checkpoint into the model (see ``Runner.load_checkpoint``)."""
        trust = bool(self.cfg.get('trust_checkpoint', False))
        checkpoint = load_training_checkpoint(
            filename, map_location=map_location, trust=trust
        )
        self.call_hook('after_load_checkpoint', checkpoint=checkpoint)
        model = self.model.module if is_model_wrapper(self.model) else self.model
        self._keep_training_only_weights(model, checkpoint, filename)
        state = checkpoint.get('state_dict', checkpoint)
        check_checkpoint_keys(
            model.state_dict().keys(),
            state.keys(),
            f'"{filename}"',
            ignore_prefixes=INFERENCE_IGNORED_PREFIXES,
        )
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
