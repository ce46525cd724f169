"""A two-node SLURM cluster on one machine for tests: munged, slurmctld and two slurmd (`n1`, `n2`) started
without systemd, stopped by PID.

Needs root and Debian's `slurmctld slurmd slurm-client munge` packages (`.ci/run` installs them). The config lives
in a scratch folder and is found through `SLURM_CONF`; the daemons listen on free ports, so that two test sessions
on one machine do not share a controller. `cred_expire=5` makes a requeued job start again within seconds instead
of two minutes. Each node offers every CPU of the machine: one-node jobs run as before, and `--nodes=2` jobs get
one task on each node. Node names do not resolve: multi-node jobs need `MASTER_ADDR=127.0.0.1`.
"""

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

NODES = ("n1", "n2")
DAEMONS = ("munged", "slurmctld", *(f"slurmd-{node}" for node in NODES))
PACKAGES = "slurmctld slurmd slurm-client munge"


class ClusterUnavailable(RuntimeError):
    """The cluster cannot start here; the message says why (tests skip with it)."""


def _wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise ClusterUnavailable(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def _free_ports(count: int) -> list[int]:
    """`count` TCP ports that nothing listens on now (the kernel's choice of ephemeral ports)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class LocalSlurmCluster:
    """`start()` brings up two nodes (`debug` partition, every CPU each), `stop()` kills what it started."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.conf = folder / "slurm.conf"
        self.processes: dict[str, subprocess.Popen] = {}

    def check_requirements(self) -> None:
        if os.geteuid() != 0:
            raise ClusterUnavailable("starting SLURM daemons needs root")
        missing = [name for name in ("munged", "slurmctld", "slurmd", "sbatch", "srun", "scontrol")
                   if not shutil.which(name, path=f"{os.environ.get('PATH', '')}:/usr/sbin")]  # fmt: skip
        if missing:
            raise ClusterUnavailable(f"missing {', '.join(missing)}: apt-get install -y {PACKAGES}")

    def start(self) -> None:
        self.check_requirements()
        for sub in ("state", "spool", "log"):
            shutil.rmtree(self.folder / sub, ignore_errors=True)
            (self.folder / sub).mkdir(parents=True)
        self._start_munge()
        self._write_config()
        os.environ["SLURM_CONF"] = str(self.conf)
        self._spawn("slurmctld", ["/usr/sbin/slurmctld", "-D", "-i", "-f", str(self.conf)])
        for node in NODES:
            (self.folder / "spool" / node).mkdir()
            self._spawn(f"slurmd-{node}", ["/usr/sbin/slurmd", "-D", "-N", node, "-f", str(self.conf)])
        try:
            _wait(lambda: self.node_state() == "idle", 40, "the nodes to become idle")
        except ClusterUnavailable as error:
            logs = "".join(p.read_text()[-1500:] for p in sorted((self.folder / "log").glob("*")))
            self.stop()
            raise ClusterUnavailable(f"{error}\n{logs}") from None

    def node_state(self) -> str:
        """The nodes' common state (`idle`), or their states joined by spaces while they differ."""
        result = subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], capture_output=True, text=True)
        states = result.stdout.split()
        return " ".join(sorted(set(states))) if len(states) == len(NODES) else "starting"

    def _start_munge(self) -> None:
        key = Path("/etc/munge/munge.key")
        if not key.is_file() or key.stat().st_size == 0:
            subprocess.run(["mungekey", "--create", f"--keyfile={key}"], check=True)
        for folder in ("/run/munge", "/var/log/munge", "/var/lib/munge"):
            Path(folder).mkdir(parents=True, exist_ok=True)
            shutil.chown(folder, "munge", "munge")
        shutil.chown(key, "munge", "munge")
        key.chmod(0o400)
        if subprocess.run(["munge", "-n"], capture_output=True).returncode == 0:
            return  # a munged is already serving (started by an earlier session or the system)
        # setpriv execs in place, so the PID is munged's own
        self._spawn("munged", ["setpriv", "--reuid=munge", "--regid=munge", "--init-groups",
                               "/usr/sbin/munged", "--foreground"])  # fmt: skip
        _wait(lambda: subprocess.run(["munge", "-n"], capture_output=True).returncode == 0, 10, "munged")

    def _write_config(self) -> None:
        host = socket.gethostname().split(".")[0]
        cpus = os.cpu_count() or 1
        memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20 - 1024
        d = self.folder
        controller, *node_ports = _free_ports(1 + len(NODES))
        nodes = "".join(
            f"NodeName={node} NodeHostname={host} NodeAddr=127.0.0.1 Port={port} CPUs={cpus} "
            f"RealMemory={memory_mb // len(NODES)} State=UNKNOWN\n"
            for node, port in zip(NODES, node_ports, strict=True)
        )
        self.conf.write_text(f"""\
ClusterName=lsgtrain-tests
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={controller}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=5
CredType=cred/munge
MailProg=/bin/true
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool/%n
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd-%n.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd-%n.log
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
KillWait=10
MinJobAge=600
Waittime=0
{nodes}PartitionName=debug Nodes={",".join(NODES)} Default=YES MaxTime=INFINITE State=UP
""")

    def _spawn(self, name: str, command: list[str]) -> None:
        with open(self.folder / "log" / f"{name}.out", "w") as log:  # the daemon keeps its own descriptor
            self.processes[name] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        subprocess.run(["scancel", "--user", "root"], capture_output=True)
        for name in reversed(DAEMONS):
            process = self.processes.pop(name, None)
            if process is None:
                continue
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        os.environ.pop("SLURM_CONF", None)
