"""A real one-node Slurm cluster on this machine, for the Slurm tests.

Installs Debian's slurmctld/slurmd/slurm-client/munge when they are absent (root + apt), writes a
one-node slurm.conf, starts munged, slurmctld and slurmd (there is no systemd), and waits until the
node is idle. Anything that cannot be done raises ``SlurmUnavailable`` with the reason, and the
tests FAIL with it (a skipped Slurm test is a defect: on a root Debian machine that reaches the package
registry every Slurm test runs). Where Slurm cannot be had (no root, no apt), deselect the tests
explicitly: ``pytest -m "not slurm"``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
CONF_DIR = Path("/etc/slurm")
SPOOL_CTLD = Path("/var/spool/slurmctld")
SPOOL_D = Path("/var/spool/slurmd")


class SlurmUnavailable(RuntimeError):
    """Slurm could not be installed or started here."""


def _run(cmd: list[str], timeout: float = 120, check: bool = True, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise SlurmUnavailable(f"`{' '.join(cmd)}` failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()[-500:]}")
    return proc


BINARIES = ("sinfo", "sbatch", "scontrol", "slurmctld", "slurmd", "munged")


def _installed() -> bool:
    return all(shutil.which(b) or Path("/usr/sbin", b).exists() for b in BINARIES)


def _install() -> None:
    if _installed():
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise SlurmUnavailable("Slurm is not installed and this is not a root Debian machine to install it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _run(["apt-get", "update", "-qq"], timeout=600, env=env)
    _run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES], timeout=900, env=env)
    if not _installed():
        missing = [b for b in BINARIES if not (shutil.which(b) or Path("/usr/sbin", b).exists())]
        raise SlurmUnavailable(f"apt-get installed {' '.join(PACKAGES)} but {', '.join(missing)} is still missing")


def _free_memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    return 4096


def _write_conf(host: str, cpus: int) -> None:
    CONF_DIR.mkdir(parents=True, exist_ok=True)
    conf = f"""# one-node test cluster written by astrosage's tests
ClusterName=astrosage-test
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=5
ProctrackType=proctrack/pgid
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerParameters=sched_interval=2,bf_interval=2
DependencyParameters=kill_invalid_depend
ReturnToService=2
MailProg=/bin/true
StateSaveLocation={SPOOL_CTLD}
SlurmdSpoolDir={SPOOL_D}
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurmctld.log
SlurmdLogFile=/var/log/slurmd.log
MinJobAge=600
KillWait=30
NodeName={host} CPUs={cpus} RealMemory={int(_free_memory_mb() * 0.8)} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
"""
    (CONF_DIR / "slurm.conf").write_text(conf)


def _node_state() -> str:
    """The node's state per sinfo; "" when Slurm is not installed or not answering."""
    if not shutil.which("sinfo"):
        return ""
    proc = _run(["sinfo", "-h", "-N", "-o", "%T"], check=False, timeout=20)
    return proc.stdout.strip()


def _stop_daemon(pid_file: Path) -> None:
    """Stop a daemon started by an earlier attempt, by the pid it recorded (never by name)."""
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    try:
        os.kill(pid, 15)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)


def ensure_cluster(timeout: float = 90) -> str:
    """Install Slurm when it is absent, start a one-node cluster; returns the node name."""
    if _node_state().startswith(("idle", "mix")):
        return socket.gethostname().split(".")[0]
    _install()
    host = socket.gethostname().split(".")[0]
    cpus = os.cpu_count() or 2
    # stop anything half-started by an earlier attempt, then start clean
    for pid_file in (Path("/run/slurmd.pid"), Path("/run/slurmctld.pid")):
        _stop_daemon(pid_file)
    _write_conf(host, cpus)
    shutil.rmtree(SPOOL_CTLD, ignore_errors=True)
    SPOOL_CTLD.mkdir(parents=True, exist_ok=True)
    SPOOL_D.mkdir(parents=True, exist_ok=True)
    munge_run = Path("/run/munge")
    munge_run.mkdir(parents=True, exist_ok=True)
    shutil.chown(munge_run, "munge", "munge")
    key = Path("/etc/munge/munge.key")
    if not key.exists():
        _run(["/usr/sbin/mungekey", "--create"], check=False)
        if key.exists():
            shutil.chown(key, "munge", "munge")
            key.chmod(0o400)
    if subprocess.run(["pgrep", "-x", "munged"], capture_output=True).returncode != 0:
        _run(["runuser", "-u", "munge", "--", "/usr/sbin/munged"])
    _run(["/usr/sbin/slurmctld"])
    _run(["/usr/sbin/slurmd"])
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        state = _node_state()
        if state.startswith("idle"):
            return host
        if state.startswith(("down", "drain")):
            subprocess.run(["scontrol", "update", f"nodename={host}", "state=resume"], capture_output=True)
        time.sleep(1)
    log = Path("/var/log/slurmctld.log")
    tail = log.read_text()[-800:] if log.exists() else ""
    raise SlurmUnavailable(f"the Slurm node did not become idle in {timeout:.0f}s (state {state!r}); slurmctld log: {tail}")


def job_field(job_id: str, field: str) -> str:
    """One field of `scontrol show job` (there is no accounting/sacct on this cluster)."""
    out = _run(["scontrol", "show", "job", job_id], check=False).stdout
    for token in out.split():
        if token.startswith(field + "="):
            return token.split("=", 1)[1]
    return ""


def wait_for_job(job_id: str, timeout: float = 600, states: tuple[str, ...] = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")) -> str:
    """Poll until the job reaches one of ``states``; returns the state."""
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        state = job_field(job_id, "JobState")
        if state in states:
            return state
        time.sleep(1)
    raise TimeoutError(f"job {job_id} still {state!r} after {timeout:.0f}s")
