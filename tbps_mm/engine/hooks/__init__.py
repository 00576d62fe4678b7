"""Hooks (registered in ``tbps_mm.registry.HOOKS``)."""

from .margin_warmup_hook import MarginWarmupHook
from .ranked_list_hook import RankedListHook

__all__ = ['MarginWarmupHook', 'RankedListHook']
