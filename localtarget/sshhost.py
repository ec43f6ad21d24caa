"""A private OpenSSH server on a loopback port: one "host" of the fleet, locally.

Each host has its own host key, its own users (real accounts, since sshd authenticates against
the system user table, which every loopback host shares: names are therefore unique per host),
its own state folder standing for the host's filesystem, and its own sshd process.
"""

from __future__ import annotations

import contextlib
import pwd
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from localtarget.processes import LOOPBACK, ManagedProcess, ServiceError, free_port


def account_exists(name: str) -> bool:
    """Whether the machine's user table has ``name`` (loopback hosts share one)."""
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


SSHD = "/usr/sbin/sshd"


def generate_keypair(path: Path, comment: str) -> str:
    """An ed25519 key pair at ``path`` (private, 0600) and ``path.pub``; returns the public line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    Path(f"{path}.pub").unlink(missing_ok=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )
    path.chmod(0o600)
    return Path(f"{path}.pub").read_text().strip()


@dataclass(frozen=True)
class HostUser:
    """A login on a local host: a real account, key-only, optionally with passwordless sudo."""

    name: str
    authorized_keys: tuple[str, ...]
    sudo: bool = False


@dataclass
class SshHost:
    """One sshd on loopback, with ``root/`` holding its keys, config, homes and state."""

    name: str
    root: Path
    users: list[HostUser]
    port: int = field(default_factory=free_port)
    process: ManagedProcess | None = field(default=None, init=False)
    created_users: list[str] = field(default_factory=list, init=False)

    @property
    def state_dir(self) -> Path:
        """Stands for the host's own filesystem: each host's state really differs."""
        return self.root / "state"

    @property
    def host_key_path(self) -> Path:
        return self.root / "etc" / "ssh_host_ed25519_key"

    def host_public_key(self) -> str:
        """``ssh-ed25519 AAAA...`` (no comment) as it goes into known_hosts."""
        parts = Path(f"{self.host_key_path}.pub").read_text().split()
        return f"{parts[0]} {parts[1]}"

    def known_hosts_line(self) -> str:
        return f"[{LOOPBACK}]:{self.port} {self.host_public_key()}"

    def setup(self) -> None:
        """Host key, config, accounts; idempotent only in the sense of failing clearly."""
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        for directory in (self.root, self.root / "etc", self.root / "home", self.state_dir):
            directory.mkdir(parents=True, exist_ok=True)
            directory.chmod(0o755)
        generate_keypair(self.host_key_path, f"host {self.name}")
        for user in self.users:
            self._create_user(user)
        (self.root / "etc" / "sshd_config").write_text(self._config())

    def regenerate_host_key(self) -> None:
        """A new host key (as after a reinstall): pinned clients must refuse the host."""
        generate_keypair(self.host_key_path, f"host {self.name} (new)")
        if self.process is not None and self.process.running():
            self.process.stop()
            self.start()

    def _config(self) -> str:
        return "\n".join(
            [
                f"Port {self.port}",
                f"ListenAddress {LOOPBACK}",
                f"HostKey {self.host_key_path}",
                f"PidFile {self.root / 'sshd.pid'}",
                f"AuthorizedKeysFile {self.root / 'authorized_keys'}/%u",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PubkeyAuthentication yes",
                "AuthenticationMethods publickey",
                "PermitRootLogin no",
                "UsePAM no",
                "StrictModes yes",
                f"AllowUsers {' '.join(u.name for u in self.users)}",
                "Subsystem sftp internal-sftp",
                "LogLevel VERBOSE",
                "",
            ]
        )

    def _create_user(self, user: HostUser) -> None:
        home = self.root / "home" / user.name
        if account_exists(user.name):
            raise ServiceError(
                f"account {user.name!r} exists already; local hosts need unique user names"
            )
        subprocess.run(
            [
                "useradd",
                "--create-home",
                "--home-dir",
                str(home),
                "--shell",
                "/bin/bash",
                "--comment",
                f"erpcloud local host {self.name}",
                user.name,
            ],
            check=True,
            capture_output=True,
        )
        self.created_users.append(user.name)
        # useradd leaves the account locked ('!'); sshd refuses locked accounts even for keys.
        subprocess.run(["usermod", "-p", "*", user.name], check=True, capture_output=True)
        keys_dir = self.root / "authorized_keys"
        keys_dir.mkdir(exist_ok=True)
        keys_dir.chmod(0o755)
        keys_file = keys_dir / user.name
        keys_file.write_text("".join(f"{key}\n" for key in user.authorized_keys))
        keys_file.chmod(0o644)
        if user.sudo:
            sudoers = Path("/etc/sudoers.d") / f"erpcloud-{user.name}"
            sudoers.write_text(f"{user.name} ALL=(ALL) NOPASSWD:ALL\n")
            sudoers.chmod(0o440)

    def start(self) -> None:
        self.process = ManagedProcess(
            name=f"sshd:{self.name}:{self.port}",
            argv=[SSHD, "-D", "-e", "-f", str(self.root / "etc" / "sshd_config")],
            log_path=self.root / "sshd.log",
        )
        self.process.start()
        self.process.wait_for_port(self.port)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def remove_accounts(self) -> None:
        """Delete the accounts and sudoers entries this host created (its files stay)."""
        for name in self.created_users:
            Path("/etc/sudoers.d", f"erpcloud-{name}").unlink(missing_ok=True)
            with contextlib.suppress(subprocess.CalledProcessError):
                subprocess.run(["userdel", name], check=True, capture_output=True)
        self.created_users.clear()

    def remove(self) -> None:
        """Stop sshd, delete the accounts it created, and its folder."""
        self.stop()
        self.remove_accounts()
        shutil.rmtree(self.root, ignore_errors=True)
