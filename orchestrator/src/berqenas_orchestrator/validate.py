"""The one way the CLI reaches the collection's code: an import shim and a click callback helper.

- ``validation`` is the collection's ``plugins/module_utils/validation.py`` (every value rule, once);
  ``module_utils("wireguard")`` imports another of the collection's module_utils the same way;
- ``rule(validation.tenant_name)`` is a click callback applying a rule (to each value of a ``multiple``
  option too): a ValidationError becomes ``click.BadParameter`` (usage error, exit code 2);
- ``check(rule, value, hint)`` does the same inside a command body;
- ``read_secret_file(path, hint)`` reads a one-line secret from a file the user names (``-``: stdin).
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


def read_secret_file(path: str, param_hint: str, *, stdin: bool = False, strip: bool = False) -> str:
    """The one-line secret in file PATH (``-`` reads stdin when STDIN; surrounding blanks removed with STRIP): a
    path the rule refuses, a file that cannot be read, an empty one or one of several lines is a usage error (the
    secret itself is never in the message)."""
    check(validation.file_path, path, "secret file", param_hint=param_hint)
    if stdin and path == "-":
        text = sys.stdin.read()
    else:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeError) as exc:
            raise click.BadParameter(f"cannot read {path!r}: {getattr(exc, 'strerror', None) or exc}",
                                     param_hint=param_hint) from None
    text = text.strip() if strip else text.rstrip("\r\n")
    if not text or "\n" in text or "\x00" in text:
        raise click.BadParameter("the file must hold the secret on one line", param_hint=param_hint)
    return text


__all__ = ["ValidationError", "check", "module_utils", "read_secret_file", "rule", "validation"]
