"""Run a playbook's front check in a process of its own (ansible's plugin loader wants the `ansible_collections`
package to be its own, which a test process that imported the collection from sys.path no longer allows).

stdin: JSON {"cases": [[spec, [expression, ...], {input: value, ...}], ...]}; stdout: JSON [refusal or null, ...]:
the error ansible's ArgumentSpecValidator (as validate_argument_spec runs it) or the assert's expressions (as
ansible's templar evaluates them, the values untrusted as !unsafe extra vars are) give, or null when accepted."""

import json
import sys


def main():
    from ansible._internal._datatag._tags import TrustedAsTemplate
    from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
    from ansible.parsing.dataloader import DataLoader
    from ansible.plugins.loader import init_plugin_loader
    from ansible.template import Templar

    init_plugin_loader([sys.argv[1]])
    loader = DataLoader()
    trusted = {}  # the playbook's expressions are trusted templates, as ansible loads them from the file
    seen = {}  # the same expressions on the same values (several playbooks share inputs): evaluated once
    templar = Templar(loader=loader)
    out = []
    for spec, exprs, provided in json.load(sys.stdin)["cases"]:
        # the action validates the spec's inputs only (an input only the asserts check is theirs)
        args = {k: v for k, v in provided.items() if k in spec}
        errors = ArgumentSpecValidator(spec).validate(args, validate_role_argument_spec=True).error_messages
        refusal = "; ".join(errors) or None
        key = json.dumps([exprs, provided], sort_keys=True)
        if refusal is None and key not in seen:
            t = templar.copy_with_new_env(available_variables=provided)
            for expr in exprs:
                try:
                    if not t.evaluate_conditional(trusted.setdefault(expr, TrustedAsTemplate().tag(expr))):
                        refusal = "false: " + expr
                except Exception as exc:  # noqa: BLE001 - the assert task fails with exactly this error
                    refusal = "%s: %s" % (type(exc).__name__, exc)
                if refusal:
                    break
            seen[key] = refusal
        out.append(refusal if refusal is not None else seen.get(key))
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
