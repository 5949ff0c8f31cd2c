"""Which constructor arguments a model saves as hyperparameters: one rule, read from the signature's types.

Plain data (numbers, strings, ``None``, ``Literal`` and containers of them) goes into the checkpoint;
objects (nets, noise models, priors, optimiser callables) live in the resolved config, which keeps
checkpoints loadable with ``weights_only=True``. The same walk up the base classes also gives the CLI
the arguments a class accepts, for its "did you mean …?" hints (:func:`ae_lightning.cli.did_you_mean`).
"""

from __future__ import annotations

import inspect
import types
import typing
from typing import Any, Literal

_PLAIN = (bool, int, float, str, type(None))


def is_plain(hint) -> bool:
    """Whether a type hint is plain data (numbers, strings, ``None``, ``Literal`` and containers of them).

    Everything else (nets, noise models, priors, optimiser callables) is an object: it lives in the
    resolved config, not in the checkpoint, which keeps checkpoints loadable with ``weights_only=True``.
    """
    origin = typing.get_origin(hint)
    if origin is Literal:
        return True
    if origin is None:
        return hint in _PLAIN
    return origin in (typing.Union, types.UnionType, list, tuple, dict) and all(
        a is Ellipsis or is_plain(a) for a in typing.get_args(hint)
    )


def _type_hints(function) -> dict[str, Any]:
    """``function``'s resolved annotations; none when they cannot be resolved (a class outside the suite whose
    annotations name what its module does not import): its arguments are then listed without types."""
    try:
        return typing.get_type_hints(function)
    except (NameError, TypeError):
        return {}


def init_parameters(cls: type) -> dict[str, Any]:
    """``{name: type hint}`` of the arguments ``cls(...)`` takes, following ``**kwargs`` up to the base classes."""
    params: dict[str, Any] = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        hints = _type_hints(klass.__init__)
        forwards = False
        for name, p in list(inspect.signature(klass.__init__).parameters.items())[1:]:
            if p.kind is inspect.Parameter.VAR_KEYWORD:
                forwards = True
            elif p.kind is not inspect.Parameter.VAR_POSITIONAL:
                params.setdefault(name, hints.get(name, Any))
        if not forwards:
            return params
    return params


def hyperparameter_names(cls: type) -> list[str]:
    """The arguments of ``cls`` saved as hyperparameters: the plain-typed ones it takes itself."""
    return [name for name, hint in init_parameters(cls).items() if is_plain(hint)]


def not_hyperparameters(cls: type, family: type) -> list[str]:
    """What ``save_hyperparameters`` of ``cls`` must ignore: every argument of the ``__init__`` of ``cls`` and of
    its bases within ``family`` that is not one of its :func:`hyperparameter_names`. Lightning collects the
    arguments of every ``__init__`` on the way up, also those a subclass passes on without taking them itself
    (the ``loss`` a VAE hands its base class): those are the base's business, not the checkpoint's."""
    keep = set(hyperparameter_names(cls))
    every = {name for klass in cls.__mro__ if "__init__" in vars(klass) and issubclass(klass, family)
             for name in inspect.signature(klass.__init__).parameters}
    return sorted(every - keep - {"self"})
