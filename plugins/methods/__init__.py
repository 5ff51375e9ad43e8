"""Reward methods, registered by name.

A method is found, in this order, as: a built-in name; an entry point in the group `coreward.methods`
(a package declares `entry_points={"coreward.methods": ["mine = my_pkg.rewards:Mine"]}`); or a
`module:Class` path importable from the current environment. Each is a subclass of `Method`.
"""

from __future__ import annotations

import importlib
from importlib import metadata

from coreward_plugins.methods.base import Method, MethodOptions

ENTRY_POINT_GROUP = "coreward.methods"

# name -> "module:Class"; imported only when asked for
BUILTIN_METHODS: dict[str, str] = {
    "gt": "coreward_plugins.methods.gt:GroundTruth",
    "majority_vote": "coreward_plugins.methods.majority_vote:MajorityVote",
    "co_rewarding_i": "coreward_plugins.methods.co_rewarding_i:CoRewardingI",
    "co_rewarding_ii": "coreward_plugins.methods.co_rewarding_ii:CoRewardingII",
    "co_rewarding_iii": "coreward_plugins.methods.co_rewarding_iii:CoRewardingIII",
    "self_certainty": "coreward_plugins.methods.self_certainty:SelfCertainty",
    "entropy": "coreward_plugins.methods.entropy:Entropy",
    "random": "coreward_plugins.methods.random:RandomReward",
}

__all__ = [
    "Method",
    "MethodOptions",
    "available_methods",
    "get_method",
    "BUILTIN_METHODS",
    "ENTRY_POINT_GROUP",
]


def _entry_points() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def available_methods() -> list[str]:
    """Built-in names first (in table order), then installed entry points, sorted."""
    extra = sorted(name for name in _entry_points() if name not in BUILTIN_METHODS)
    return list(BUILTIN_METHODS) + extra


def _import_path(path: str, name: str) -> object:
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ValueError(f"method {name!r}: a path must look like module:Class")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"method {name!r}: cannot import module {module_name!r} ({exc})") from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ValueError(f"method {name!r}: module {module_name!r} has no {attr!r}") from None


def _checked(obj: object, name: str) -> type[Method]:
    if not (isinstance(obj, type) and issubclass(obj, Method)):
        raise ValueError(
            f"method {name!r} is {obj!r}, not a subclass of coreward_plugins.methods.Method"
        )
    return obj


def get_method(name: str) -> type[Method]:
    """The Method class called `name`. Raises ValueError naming the available methods if none is."""
    if name in BUILTIN_METHODS:
        return _checked(_import_path(BUILTIN_METHODS[name], name), name)
    entry_points = _entry_points()
    if name in entry_points:
        try:
            loaded = entry_points[name].load()
        except (ImportError, AttributeError) as exc:
            raise ValueError(
                f"method {name!r}: its entry point {entry_points[name].value!r} does not load ({exc})"
            ) from exc
        return _checked(loaded, name)
    if ":" in name:
        return _checked(_import_path(name, name), name)
    raise ValueError(
        f"unknown method {name!r}; available: {', '.join(available_methods())}, or module:Class"
    )
