"""The embedded PostGIS: a project-local PostgreSQL cluster run with the machine's own binaries.

`wangge db start` creates it with initdb on first use (trust authentication, listening on 127.0.0.1 only, on a
free port), starts it with pg_ctl and prints its URL. PostgreSQL refuses to run as root, so when we are root the
cluster belongs to the `postgres` system user and its commands run through runuser.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from gis.errors import ClusterError

SUPERUSER = "wangge"
DATABASE = "wangge"
_INSTALL_HINT = "install them with: apt-get install postgresql-15 postgresql-15-postgis-3 (or set WANGGE_DATABASE_URL)"


def find_bindir(explicit: Path | None = None) -> Path:
    """The newest PostgreSQL server bin directory that has initdb and pg_ctl."""
    if explicit:
        d = Path(explicit)
        if not all((d / tool).exists() for tool in ("initdb", "pg_ctl", "postgres")):
            raise ClusterError(f"no PostgreSQL server binaries (initdb, pg_ctl, postgres) in {d}: {_INSTALL_HINT}")
        return d
    candidates: list[Path] = []
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    for tool in ("pg_ctl", "initdb"):
        found = shutil.which(tool)
        if found:
            candidates.append(Path(found).parent)
    for d in candidates:
        if (d / "initdb").exists() and (d / "pg_ctl").exists() and (d / "postgres").exists():
            return d
    raise ClusterError(f"PostgreSQL server binaries (initdb, pg_ctl, postgres) not found: {_INSTALL_HINT}")


def _version_key(p: Path) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", p.parent.name)) or (0,)


def check_postgis(bindir: Path) -> None:
    sharedir = subprocess.run(
        [str(bindir / "pg_config"), "--sharedir"], capture_output=True, text=True, check=False
    ).stdout.strip() if (bindir / "pg_config").exists() else ""
    roots = [Path(sharedir)] if sharedir else []
    roots += list(Path("/usr/share/postgresql").glob(bindir.parent.name))
    if not any((r / "extension" / "postgis.control").exists() for r in roots):
        ver = bindir.parent.name
        raise ClusterError(
            f"PostGIS is not installed for PostgreSQL {ver}: "
            f"install it with: apt-get install postgresql-{ver}-postgis-3"
        )


def memory_settings(ram_bytes: int | None = None) -> dict[str, str]:
    """shared_buffers an eighth of the machine's memory (128 MB–4 GB: the app, and on a wall PC a browser, share
    the machine) and effective_cache_size half of it."""
    if ram_bytes is None:
        ram_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    mb = ram_bytes // 2**20
    return {"shared_buffers": f"'{min(max(mb // 8, 128), 4096)}MB'",
            "effective_cache_size": f"'{max(mb // 2, 256)}MB'"}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@dataclass
class Cluster:
    """A PostgreSQL cluster under `pgdata`, reachable at 127.0.0.1:port."""

    pgdata: Path
    bindir: Path | None = None
    fast: bool = False  # fsync off: for throw-away test clusters only

    def __post_init__(self) -> None:
        self.pgdata = Path(self.pgdata).absolute()
        if os.geteuid() == 0 and not self._reachable_by_postgres(self.pgdata):
            # The postgres user cannot traverse e.g. /root: keep the cluster in a stable place it can reach.
            tag = hashlib.sha1(str(self.pgdata).encode()).hexdigest()[:10]
            self.pgdata = Path("/var/tmp") / f"wangge-{tag}" / "pgdata"

    # -- running commands -------------------------------------------------------------------------------
    @property
    def _as_root(self) -> bool:
        return os.geteuid() == 0

    def _bin(self) -> Path:
        if self.bindir is None:
            self.bindir = find_bindir()
        return self.bindir

    def _run(self, args: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(self._bin() / args[0]), *args[1:]]
        if self._as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL)
        if check and proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip().splitlines()
            raise ClusterError(f"{args[0]} failed: {detail[-1] if detail else proc.returncode}")
        return proc

    @staticmethod
    def _reachable_by_postgres(path: Path) -> bool:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            return False
        for parent in [*reversed(path.parents)]:
            if not parent.exists():
                break
            st = parent.stat()
            mode = st.st_mode
            if st.st_uid == pw.pw_uid:
                ok = bool(mode & 0o100)
            elif st.st_gid == pw.pw_gid:
                ok = bool(mode & 0o010)
            else:
                ok = bool(mode & 0o001)
            if not ok:
                return False
        return True

    # -- state ------------------------------------------------------------------------------------------
    @property
    def initialised(self) -> bool:
        return (self.pgdata / "PG_VERSION").exists()

    @property
    def port(self) -> int:
        conf = (self.pgdata / "postgresql.auto.conf").read_text() if self.initialised else ""
        m = re.findall(r"^port\s*=\s*'?(\d+)", conf, flags=re.M)
        if not m:
            raise ClusterError(f"no port configured in {self.pgdata}")
        return int(m[-1])

    def url(self, database: str = DATABASE) -> str:
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def running(self) -> bool:
        if not self.initialised:
            return False
        return self._run(["pg_ctl", "status", "-D", str(self.pgdata)], check=False).returncode == 0

    # -- lifecycle --------------------------------------------------------------------------------------
    def init(self) -> None:
        bindir = self._bin()
        check_postgis(bindir)
        self.pgdata.mkdir(parents=True, exist_ok=True)
        if self._as_root:
            pw = pwd.getpwnam("postgres")
            os.chown(self.pgdata, pw.pw_uid, pw.pw_gid)
        self.pgdata.chmod(0o700)
        self._run(["initdb", "-D", str(self.pgdata), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--no-locale"])
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": "''",
            "port": str(_free_port()),
            "max_connections": "100",
            # Sized to the machine: PostgreSQL's own 128 MB leaves a million cases on disk, and the page cache of a
            # virtual machine may be reclaimed from under it.
            **memory_settings(),
            "work_mem": "'32MB'",
            "maintenance_work_mem": "'256MB'",
            "logging_collector": "off",
            "jit": "off",  # short OLTP-like queries: compiling costs more than it saves
        }
        if self.fast:
            settings |= {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
        self._write_auto_conf(settings)

    def _write_auto_conf(self, settings: dict[str, str]) -> None:
        path = self.pgdata / "postgresql.auto.conf"
        lines = [ln for ln in path.read_text().splitlines() if ln.split("=")[0].strip() not in settings]
        lines += [f"{k} = {v}" for k, v in settings.items()]
        text = "\n".join(lines) + "\n"
        if self._as_root:
            proc = subprocess.run(
                ["runuser", "-u", "postgres", "--", "tee", str(path)],
                input=text, capture_output=True, text=True, check=False,
            )
            if proc.returncode != 0:
                raise ClusterError(f"cannot write {path}: {proc.stderr.strip()}")
        else:
            path.write_text(text)

    def start(self) -> str:
        """Create (first time) and start the cluster, create the database, return its URL."""
        if not self.initialised:
            self.init()
        if not self.running():
            if not _port_free(self.port):
                self._write_auto_conf({"port": str(_free_port())})
            log = self.pgdata.parent / "postgresql.log"
            if self._as_root and not log.exists():
                log.touch()
                pw = pwd.getpwnam("postgres")
                os.chown(log, pw.pw_uid, pw.pw_gid)
            self._run(["pg_ctl", "start", "-w", "-t", "60", "-D", str(self.pgdata), "-l", str(log)])
        self._ensure_database()
        return self.url()

    def stop(self) -> bool:
        if not self.running():
            return False
        self._run(["pg_ctl", "stop", "-w", "-m", "fast", "-D", str(self.pgdata)])
        return True

    def _ensure_database(self, name: str = DATABASE) -> None:
        import psycopg

        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(
                    host="127.0.0.1", port=self.port, user=SUPERUSER, dbname="postgres", autocommit=True
                ) as conn:
                    if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                        conn.execute(f'CREATE DATABASE "{name}"')
                    return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise ClusterError(f"the embedded cluster at port {self.port} does not answer: {exc}") from exc
                time.sleep(0.2)
