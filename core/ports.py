"""Whether a TCP port is free on this machine, and which process holds it (Linux).

The holder is read from /proc (no `ss`, `lsof` or `netstat`, which a minimal Debian lacks): the
listening socket's inode in /proc/net/tcp and tcp6, then the process whose /proc/<pid>/fd
links to it. Another user's processes cannot be read unless we are root: then it is "another
process".
"""

import errno
import socket
from itertools import pairwise
from pathlib import Path

PROC = Path("/proc")
TCP_LISTEN = "0A"


def port_free(*, host: str, port: int) -> bool:
    """Whether a server could listen on host:port now (as Django's runserver and the broker
    do: SO_REUSEADDR, so that a port left in TIME_WAIT by a stopped server counts as free).
    Raises OSError when host is not an address of this machine."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def port_free_next(*, host: str, after: int, avoid: set[int] = frozenset()) -> int:
    """The first port above `after` that is free on host (and not in `avoid`)."""
    for port in range(after + 1, 65536):
        if port not in avoid and port_free(host=host, port=port):
            return port
    raise OSError(f"No free port above {after} on {host}.")


def port_holder(*, port: int) -> str:
    """Who listens on TCP `port`: "run_dev (pid N)" when the listener belongs to a `run_dev`,
    else "pid N (its command line)", else "another process"."""
    inodes = _listening_inodes(port)
    pid = _socket_owner(inodes) if inodes else None
    if pid is None:
        return "another process"
    for ancestor in _ancestors(pid):
        argv = _argv(ancestor)
        if any(a.endswith("manage.py") and b == "run_dev" for a, b in pairwise(argv)):
            return f"run_dev (pid {ancestor})"
    argv = _argv(pid)
    return f"pid {pid} ({' '.join(argv) or 'unknown command'})"


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == TCP_LISTEN and int(local.rpartition(":")[2], 16) == port:
                inodes.add(inode)
    return inodes


def _socket_owner(inodes: set[str]) -> int | None:
    links = {f"socket:[{inode}]" for inode in inodes}
    for process in PROC.iterdir():
        if not process.name.isdigit():
            continue
        try:
            for fd in (process / "fd").iterdir():
                try:
                    if str(fd.readlink()) in links:
                        return int(process.name)
                except OSError:
                    continue
        except OSError:  # another user's process, or gone
            continue
    return None


def _ancestors(pid: int) -> list[int]:
    """pid, its parent, and so on up to (not including) init."""
    chain = []
    while pid > 1 and pid not in chain:
        chain.append(pid)
        try:
            stat = (PROC / str(pid) / "stat").read_text()
        except OSError:
            break
        pid = int(stat.rpartition(")")[2].split()[1])  # after "pid (comm) state": ppid
    return chain


def _argv(pid: int) -> list[str]:
    """The command line, its program shortened to its name (python3, not /usr/bin/python3)."""
    try:
        argv = (PROC / str(pid) / "cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []
    argv = [arg for arg in argv if arg]
    return [Path(argv[0]).name, *argv[1:]] if argv else []
