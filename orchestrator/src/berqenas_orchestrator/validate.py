"""The collection's validation rules, imported (never copied) for use before desired state is written."""

from __future__ import annotations

import sys

from .paths import collection_root


def _load():
    try:
        from ansible_collections.berqenas.platform.plugins.module_utils import validation
    except ImportError:
        root = collection_root() / ".collections"
        if root.is_dir() and str(root) not in sys.path:
            sys.path.insert(0, str(root))
        from ansible_collections.berqenas.platform.plugins.module_utils import validation
    return validation


validation = _load()
ValidationError = validation.ValidationError
tenant_name = validation.tenant_name
port = validation.port
no_template = validation.no_template
