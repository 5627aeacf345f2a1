"""berqenas_orchestrator.vault: the vault password file and !vault values in a vars file."""

import os
import stat

import pytest
from ansible.parsing.vault import VaultLib, VaultSecret
from ansible.parsing.yaml.loader import AnsibleLoader
from berqenas_orchestrator import vault

pytestmark = pytest.mark.unit


class FakeApp:
    def __init__(self, tmp_path, local=True):
        self.home = tmp_path / "home"
        self.inventory = tmp_path / "inventory"
        self.is_local = local


def read_vars(app, name="s.yml"):
    with open(app.inventory / "group_vars" / "all" / name, encoding="utf-8") as f:
        return AnsibleLoader(f).get_single_data()


def test_generated_password_file_store_forget(tmp_path, monkeypatch):
    monkeypatch.setenv("ANSIBLE_VAULT_PASSWORD_FILE", str(tmp_path / "ignored-for-the-local-instance"))
    app = FakeApp(tmp_path)
    assert vault.run_env(app) == {}  # nothing made before it is needed
    vault.store(app, "s.yml", "pw", "erp", "ab{{ 6*7 }}cd")
    vault.store(app, "s.yml", "pw", "crm", "second")
    pass_file = app.home / "vault" / "pass"
    assert stat.S_IMODE(os.stat(pass_file).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(pass_file.parent).st_mode) == 0o700
    assert vault.run_env(app) == {"ANSIBLE_VAULT_PASSWORD_FILE": str(pass_file)}
    text = (app.inventory / "group_vars" / "all" / "s.yml").read_text()
    assert "6*7" not in text and "second" not in text and text.count("!vault |") == 2
    lib = VaultLib([("default", VaultSecret(pass_file.read_bytes().strip()))])
    data = read_vars(app)
    assert lib.decrypt(data["pw"]["erp"]._ciphertext).decode() == "ab{{ 6*7 }}cd"
    assert lib.decrypt(data["pw"]["crm"]._ciphertext).decode() == "second"
    before = pass_file.read_bytes()
    assert vault.forget(app, "s.yml", "pw", "erp") and not vault.forget(app, "s.yml", "pw", "erp")
    assert set(read_vars(app)["pw"]) == {"crm"} and pass_file.read_bytes() == before  # the key is kept


def test_operator_inventory_uses_their_vault_password_file(tmp_path, monkeypatch):
    theirs = tmp_path / "theirs"
    theirs.write_text("operator secret\n")
    monkeypatch.setenv("ANSIBLE_VAULT_PASSWORD_FILE", str(theirs))
    app = FakeApp(tmp_path, local=False)
    vault.store(app, "s.yml", "pw", "erp", "p@ss")
    assert not (app.home / "vault").exists()
    assert vault.run_env(app) == {"ANSIBLE_VAULT_PASSWORD_FILE": str(theirs)}
    lib = VaultLib([("default", VaultSecret(b"operator secret"))])
    assert lib.decrypt(read_vars(app)["pw"]["erp"]._ciphertext).decode() == "p@ss"
    monkeypatch.delenv("ANSIBLE_VAULT_PASSWORD_FILE")
    assert not vault.forget(FakeApp(tmp_path / "other", local=False), "s.yml", "pw", "erp")
