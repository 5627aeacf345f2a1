"""Secrets the operator supplies, kept with Ansible Vault in the inventory.

- the vault password FILE: ``$ANSIBLE_VAULT_PASSWORD_FILE`` when the operator set it for their own
  ``--inventory``; otherwise ``$BERQENAS_HOME/vault/pass`` (0600 in a 0700 dir), generated on first need;
- a secret is encrypted with ansible's own VaultLib (never a subprocess: the secret stays off argv) and
  written as a ``!vault`` value under a dict variable of a vars file in ``group_vars/all/`` (e.g.
  ``berqenas_remotedb_passwords: {erp: !vault |...}``), which Ansible decrypts inside the play;
- ``App.run`` hands ansible-playbook the password file's PATH (``ANSIBLE_VAULT_PASSWORD_FILE`` in the child's
  environment); the path is not a secret, the file's content is, and it never leaves the file.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
from pathlib import Path

import yaml

ENV = "ANSIBLE_VAULT_PASSWORD_FILE"


class _VaultValue(str):
    """Ciphertext written with the ``!vault |`` tag."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_VaultValue, lambda d, v: d.represent_scalar("!vault", str(v), style="|"))


class _Loader(yaml.SafeLoader):
    pass


_Loader.add_constructor("!vault", lambda loader, node: _VaultValue(loader.construct_scalar(node)))


def password_file(app, create: bool = True) -> Path | None:
    """The vault password file of this platform (made 0600 on first need when ``create``), else None."""
    env = os.environ.get(ENV)
    if env and not app.is_local:
        return Path(env)
    path = app.home / "vault" / "pass"
    if path.exists():
        return path
    if not create:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
    return path


def run_env(app) -> dict[str, str]:
    """What ``App.run`` adds to the child's environment: the password file's path, if there is one."""
    path = password_file(app, create=False)
    return {ENV: str(path)} if path else {}


def _vault(app):
    from ansible.parsing.dataloader import DataLoader
    from ansible.parsing.vault import VaultLib, get_file_vault_secret

    # get_file_vault_secret also runs an executable password file (a vault client script) as Ansible does
    secret = get_file_vault_secret(filename=str(password_file(app)), vault_id="default", loader=DataLoader())
    secret.load()
    return VaultLib([("default", secret)])


def encrypt(app, value: str) -> str:
    return _vault(app).encrypt(value).decode("ascii")


def decrypt(app, ciphertext: str) -> str:
    return _vault(app).decrypt(ciphertext).decode("utf-8")


@contextlib.contextmanager
def _edit(app, filename: str):
    vars_dir = app.inventory / "group_vars" / "all"
    vars_dir.mkdir(parents=True, exist_ok=True)
    path = vars_dir / filename
    with open(vars_dir / f".{filename}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = {}
        if path.exists():
            with open(path, encoding="utf-8") as f:
                data = yaml.load(f, Loader=_Loader) or {}  # noqa: S506 - safe loader subclass
        yield data
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("# Secrets written by `berqenas`, encrypted with Ansible Vault (never plain text).\n")
            f.write(yaml.dump(data, Dumper=_Dumper, default_flow_style=False, sort_keys=True))
        os.replace(tmp, path)


def store(app, filename: str, variable: str, key: str, value: str) -> None:
    """Encrypt ``value`` as ``variable[key]`` in group_vars/all/``filename``."""
    ciphertext = _VaultValue(encrypt(app, value))
    with _edit(app, filename) as data:
        entries = data.get(variable) or {}
        entries[key] = ciphertext
        data[variable] = entries


def forget(app, filename: str, variable: str, key: str) -> bool:
    """Remove ``variable[key]``; True when it was there."""
    if not (app.inventory / "group_vars" / "all" / filename).exists():
        return False
    with _edit(app, filename) as data:
        entries = data.get(variable) or {}
        found = entries.pop(key, None) is not None
        data[variable] = entries
    return found


def entries(app, filename: str, variable: str) -> dict[str, str]:
    """``variable`` of group_vars/all/``filename``, each value decrypted (in this process only)."""
    path = app.inventory / "group_vars" / "all" / filename
    if not path.exists():
        return {}
    with open(path, encoding="utf-8") as f:
        data = yaml.load(f, Loader=_Loader) or {}  # noqa: S506 - safe loader subclass
    return {k: decrypt(app, str(v)) for k, v in (data.get(variable) or {}).items()}
