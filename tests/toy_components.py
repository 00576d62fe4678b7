"""Tiny components for testing the training tools without the TBPS model.

They are registered in tbps_mm's registries, so a config with
``custom_imports=dict(imports=['toy_components'])`` (and this folder on
``PYTHONPATH``) trains in a fraction of a second, which lets the tests
exercise the Runner, checkpoints, resume and CPU DDP in isolation.
"""

import os
import signal

import torch
from mmengine.dataset import BaseDataset
from mmengine.hooks import Hook
from mmengine.model import BaseModel

from tbps_mm.registry import DATASETS, HOOKS, MODELS


@MODELS.register_module(force=True)
class ToyRegressor(BaseModel):
    """y = w x + b, trained with MSE."""

    def __init__(self, data_preprocessor=None):
        super().__init__(data_preprocessor=data_preprocessor)
        self.linear = torch.nn.Linear(4, 1)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        x = torch.stack(inputs) if isinstance(inputs, list) else inputs
        pred = self.linear(x).squeeze(-1)
        if mode == 'loss':
            target = (
                torch.stack(data_samples)
                if isinstance(data_samples, list)
                else data_samples
            )
            return dict(loss_mse=torch.nn.functional.mse_loss(pred, target))
        return pred


@DATASETS.register_module(force=True)
class ToyRegressionDataset(BaseDataset):
    """A fixed random regression problem of ``length`` items."""

    def __init__(self, length: int = 16, **kwargs):
        self.length = length
        super().__init__(serialize_data=False, **kwargs)

    def load_data_list(self):
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(self.length, 4, generator=gen)
        y = x.sum(dim=1)
        return [dict(inputs=x[i], data_samples=y[i]) for i in range(self.length)]

    def prepare_data(self, idx):
        info = self.get_data_info(idx)
        return dict(inputs=info['inputs'], data_samples=info['data_samples'])


@HOOKS.register_module(force=True)
class KillAfterEpochHook(Hook):
    """SIGKILLs the process once ``epoch`` is done and its checkpoint saved."""

    priority = 'LOWEST'  # after CheckpointHook has written the epoch

    def __init__(self, epoch: int):
        self.epoch = epoch

    def after_train_epoch(self, runner):
        if runner.epoch + 1 == self.epoch:  # runner.epoch counts from 0 here
            os.kill(os.getpid(), signal.SIGKILL)
