"""deploy/: the install script run for real into a throwaway root, the systemd
unit checked by systemd-analyze, every shell script through shellcheck, and the
compose file's shape."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
SHELL_SCRIPTS = sorted([*DEPLOY.glob("*.sh"), *(ROOT / "scripts").iterdir(), ROOT / ".ci" / "run"])


def test_every_shell_script_passes_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is missing: scripts/bootstrap installs it for the tests"
    result = subprocess.run([shellcheck, *map(str, SHELL_SCRIPTS)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_unit_is_hardened() -> None:
    unit = (DEPLOY / "linkhub.service").read_text()
    for setting in (
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "StateDirectory=linkhub",
        "User=linkhub",
        "ExecStart=/opt/linkhub/venv/bin/linkhub run",
    ):
        assert setting in unit.splitlines(), setting


def test_install_into_a_throwaway_root_then_uninstall(tmp_path: Path) -> None:
    root = tmp_path / "root"
    installed = subprocess.run(
        ["bash", str(DEPLOY / "install.sh"), "--prefix", str(root), "--no-apt", "--no-systemd"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stdout + installed.stderr
    linkhub = root / "opt/linkhub/venv/bin/linkhub"
    assert subprocess.run([str(linkhub), "run", "--help"], capture_output=True, timeout=60).returncode == 0
    assert (root / "opt/linkhub/venv/bin/linkhub-device").exists()
    assert not (root / "opt/linkhub/src/.venv").exists()  # only tracked files were copied

    unit = root / "etc/systemd/system/linkhub.service"
    assert f"ExecStart={linkhub} run" in unit.read_text()
    if shutil.which("systemd-analyze"):
        verified = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
        assert verified.returncode == 0, verified.stderr

    state = root / "var/lib/linkhub"
    (state / "linkhub.db").write_text("kept")
    kept = subprocess.run(
        ["bash", str(DEPLOY / "uninstall.sh"), "--prefix", str(root), "--no-systemd"],
        capture_output=True,
        text=True,
    )
    assert kept.returncode == 0, kept.stderr
    assert not (root / "opt/linkhub").exists() and not unit.exists()
    assert (state / "linkhub.db").read_text() == "kept"  # data stays unless --purge
    purged = subprocess.run(
        ["bash", str(DEPLOY / "uninstall.sh"), "--prefix", str(root), "--no-systemd", "--purge"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert purged.returncode == 0 and not state.exists()


def test_install_refuses_unknown_options() -> None:
    result = subprocess.run(
        ["bash", str(DEPLOY / "install.sh"), "--frobnicate"], capture_output=True, text=True
    )
    assert result.returncode == 2 and "unknown option" in result.stderr


def test_the_compose_file_runs_the_hub_on_a_dynamic_security_mosquitto() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"mosquitto", "linkhub"}
    assert services["mosquitto"]["image"].startswith("eclipse-mosquitto:2")
    assert "dynsec init" in " ".join(services["mosquitto"]["command"])
    command = services["linkhub"]["command"]
    assert command[0] == "run"
    # No password in any process's arguments (issue 19, item 18): the hub reads
    # its broker URL from the environment, mosquitto_ctrl the password from stdin.
    assert "--broker" not in command
    assert services["linkhub"]["environment"]["LINKHUB_BROKER"].startswith("mqtt://admin:${")
    init = services["mosquitto"]["command"][-1]
    assert "| mosquitto_ctrl dynsec init /mosquitto/data/dynamic-security.json admin;" in init
    for service in services.values():
        assert "PASSWORD" not in " ".join(service["command"]).replace('"$$ADMIN_PASSWORD"', ""), service
    assert services["linkhub"]["build"]["dockerfile"] == "deploy/Dockerfile"
    conf = (DEPLOY / "mosquitto/mosquitto.conf").read_text()
    assert "plugin_opt_config_file /mosquitto/data/dynamic-security.json" in conf
    assert "allow_anonymous false" in conf
    for volume in services["linkhub"]["volumes"] + services["mosquitto"]["volumes"]:
        name = volume.split(":")[0]
        assert name.startswith("./") or name in compose["volumes"], volume


@pytest.mark.parametrize("path", ["hub", "web", "linkhub", "firmware_sim", "pyproject.toml"])
def test_the_dockerfile_copies_what_the_package_needs(path: str) -> None:
    assert path in (DEPLOY / "Dockerfile").read_text()


def test_the_compose_first_start_makes_the_admin_with_the_password_on_stdin(tmp_path: Path) -> None:
    """The mosquitto service's first-start line, run here by sh with the local
    mosquitto_ctrl: the admin identity is made, the password never an argument."""
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    line = compose["services"]["mosquitto"]["command"][-1]
    init = line.split("exec mosquitto")[0].replace("$$", "$").replace("/mosquitto/data/", f"{tmp_path}/")
    done = subprocess.run(
        ["sh", "-c", init], env={"ADMIN_PASSWORD": "a long admin password", "PATH": os.environ["PATH"]},
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    made = json.loads((tmp_path / "dynamic-security.json").read_text())
    assert [client["username"] for client in made["clients"]] == ["admin"]
    assert "a long admin password" not in (tmp_path / "dynamic-security.json").read_text()  # hashed
