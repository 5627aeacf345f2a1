"""The one way the CLI reaches the collection's code: an import shim and a click callback helper.

- ``validation`` is the collection's ``plugins/module_utils/validation.py`` (every value rule, once);
  ``module_utils("wireguard")`` imports another of the collection's module_utils the same way;
- ``rule(validation.tenant_name)`` is a click callback applying a rule (to each value of a ``multiple``
  option too): a ValidationError becomes ``click.BadParameter`` (usage error, exit code 2);
- ``check(rule, value, hint)`` does the same inside a command body.
Nothing here restates a rule.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

import click

from .paths import collection_root

PACKAGE = "ansible_collections.berqenas.platform.plugins.module_utils"


def module_utils(name: str):
    """The collection's ``plugins/module_utils/NAME`` (the installed collection, else the checkout's .collections)."""
    try:
        return importlib.import_module(f"{PACKAGE}.{name}")
    except ImportError:
        root = collection_root() / ".collections"
        if not root.is_dir() or str(root) in sys.path:
            raise
        sys.path.insert(0, str(root))
        return importlib.import_module(f"{PACKAGE}.{name}")


validation = module_utils("validation")
ValidationError = validation.ValidationError
# the rules themselves are validation.<rule>; these names are kept for modules that imported them from here
tenant_name = validation.tenant_name
port = validation.port
no_template = validation.no_template


def check(fn: Callable, value: Any, *args, param_hint: str | None = None) -> Any:
    """``fn(value, *args)``; a ValidationError (domain errors subclass it) becomes click.BadParameter (exit 2)."""
    try:
        return fn(value, *args)
    except ValidationError as exc:
        raise click.BadParameter(str(exc), param_hint=param_hint) from None


def rule(fn: Callable, *args, keep: bool = False) -> Callable:
    """A click callback applying ``fn(value, *args)``: the parameter becomes what the rule returns (with KEEP, the
    value as given). None (an absent option) passes; the values of a ``multiple`` option are checked one by one."""

    def one(value):
        result = check(fn, value, *args)
        return value if keep else result

    def callback(ctx, param, value):
        if value is None:
            return None
        if isinstance(value, tuple):
            return tuple(one(v) for v in value)
        return one(value)

    return callback


__all__ = ["ValidationError", "check", "module_utils", "rule", "validation"]
