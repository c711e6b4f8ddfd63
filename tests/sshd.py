"""A real OpenSSH server on a free loopback port, as a device for `bench --on` and `sweep --on`.

It has a temporary host key, one authorized key, and a client config and known_hosts of its
own (passed with --ssh-config), so the user's ~/.ssh is never read or written. Its sessions
get TMPDIR set to a folder of the fixture's, where the runner's temporary folders appear and
must be gone afterwards. Hosts in the config:
- device: the server, known and trusted (also as ssh://USER@127.0.0.1:PORT, the uri property);
- stranger: the same server, whose host key is not in its (empty) known_hosts;
- refused: the same server with a key it does not authorize;
- closed: a port where nothing listens;
- silent: a port that accepts and never speaks, with a short ConnectTimeout.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
from pathlib import Path

from conftest import wait_for

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


class Server:
    def __init__(self, folder: Path):
        self.folder = folder
        self.remote_tmp = folder / "remote-tmp"
        self.remote_tmp.mkdir()
        for name in ("host_key", "id", "other_id"):
            _keygen(folder / name)
        (folder / "authorized_keys").write_text((folder / "id.pub").read_text())
        self.port, closed = _free_port(), _free_port()
        self.silent = socket.socket()
        self.silent.bind(("127.0.0.1", 0))
        self.silent.listen(8)
        (folder / "sshd_config").write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {folder}/host_key\nPidFile {folder}/sshd.pid\n"
            f"AuthorizedKeysFile {folder}/authorized_keys\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n"
            f"KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nSetEnv TMPDIR={self.remote_tmp}\n"
            "LogLevel ERROR\n")
        host_key = (folder / "host_key.pub").read_text().split()
        (folder / "known_hosts").write_text(f"[127.0.0.1]:{self.port} {host_key[0]} {host_key[1]}\n")
        (folder / "empty_known_hosts").write_text("")
        common = (f"  HostName 127.0.0.1\n  User {getpass.getuser()}\n  IdentitiesOnly yes\n  IdentityAgent none\n"
                  "  GlobalKnownHostsFile /dev/null\n  LogLevel ERROR\n  ConnectTimeout 120\n")
        self.config = folder / "ssh_config"
        self.config.write_text(
            f"Host device\n  Port {self.port}\n  IdentityFile {folder}/id\n  UserKnownHostsFile {folder}/known_hosts\n"
            f"  StrictHostKeyChecking yes\n{common}"
            f"Host stranger\n  Port {self.port}\n  IdentityFile {folder}/id\n"
            f"  UserKnownHostsFile {folder}/empty_known_hosts\n{common}"
            f"Host refused\n  Port {self.port}\n  IdentityFile {folder}/other_id\n"
            f"  UserKnownHostsFile {folder}/known_hosts\n{common}"
            f"Host closed\n  Port {closed}\n  IdentityFile {folder}/id\n  UserKnownHostsFile {folder}/known_hosts\n"
            f"{common}"
            f"Host 127.0.0.1\n  IdentityFile {folder}/id\n  UserKnownHostsFile {folder}/known_hosts\n"
            f"  IdentitiesOnly yes\n  IdentityAgent none\n  GlobalKnownHostsFile /dev/null\n  LogLevel ERROR\n"
            f"Host silent\n  Port {self.silent.getsockname()[1]}\n  IdentityFile {folder}/id\n"
            f"  UserKnownHostsFile {folder}/known_hosts\n{common.replace('ConnectTimeout 120', 'ConnectTimeout 2')}")
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", exist_ok=True)  # the privilege separation folder root's sshd wants
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(folder / "sshd_config")],
                                     stdout=subprocess.DEVNULL, stderr=open(folder / "sshd.log", "wb"))
        wait_for(self._listening, self.proc)

    def _listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=5).close()
            return True
        except OSError:
            return False

    @property
    def uri(self) -> str:
        return f"ssh://{getpass.getuser()}@127.0.0.1:{self.port}"

    def args(self, host: str = "device") -> list[str]:
        return ["--on", host, "--ssh-config", str(self.config)]

    def left(self) -> list[Path]:
        """What runners left in the sessions' TMPDIR."""
        return sorted(self.remote_tmp.iterdir())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()
        self.silent.close()
