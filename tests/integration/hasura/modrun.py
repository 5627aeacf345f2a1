"""Run a collection module's main() in this process (real HTTP to the double, real PostgreSQL), return its result."""

import contextlib
import importlib
import io
import json

from ansible.module_utils import basic


def run_module(name, args, check=False, diff=False):
    mod = importlib.import_module("ansible_collections.berqenas.platform.plugins.modules." + name)
    payload = dict(args, _ansible_check_mode=check, _ansible_diff=diff)
    basic._ANSIBLE_ARGS = json.dumps({"ANSIBLE_MODULE_ARGS": payload}).encode()
    basic._ANSIBLE_PROFILE = "legacy"
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            try:
                mod.main()
            except SystemExit:
                pass
    finally:
        basic._ANSIBLE_ARGS = None
        basic._ANSIBLE_PROFILE = None
    text = out.getvalue()
    res = json.loads(text[text.index("{"):])
    res["_stdout"] = text
    return res
