"""Hooks (registered in ``tbps_mm.registry.HOOKS``)."""

from .ranked_list_hook import RankedListHook

__all__ = ['RankedListHook']
