"""A metaclass so that an ABC interface can be implemented by a traitlets class."""

from __future__ import annotations

from abc import ABCMeta

from traitlets.traitlets import MetaHasTraits

__all__ = ["InterfaceMeta"]


class InterfaceMeta(MetaHasTraits, ABCMeta):
    """ABCMeta that also satisfies traitlets' metaclass.

    ``class OpenAIModel(Model, LoggingConfigurable)`` needs one metaclass
    deriving from both, or Python refuses the class ("metaclass conflict").
    """
