"""A loopback sshd whose sessions find the stand-in nvidia-smi on their PATH.

``GpuFleet`` is a :class:`fleet.Fleet` (nodes ``gpu1``.. on one sshd) where
sshd sets ``PATH`` to a directory holding ``tests/standin-nvidia-smi`` (as
``nvidia-smi``) and ``FAKE_GPU_DIR`` to a state directory; its ssh config
sends ``FAKE_GPU_NODE=<node>`` per host, so each node has GPUs of its own,
set with :meth:`set_gpus` (also while a run goes on). With ``smi=False`` the
PATH holds no nvidia-smi at all (a node without the NVIDIA tools).
"""
import json
import os
import shutil

from fleet import Fleet

TESTS = os.path.dirname(os.path.abspath(__file__))
STANDIN_SMI = os.path.join(TESTS, "standin-nvidia-smi")
#: What the sessions need besides nvidia-smi (the probe and the tests' jobs).
TOOLS = ("sh", "tr", "grep", "sleep", "cat", "echo", "env", "true", "false", "date", "kill",
         "setsid", "ps", "mkdir", "rm", "cp", "mv", "ls", "head", "wc", "python3")


def gpu(index, free=81000, total=81559, mig="Disabled", uuid=None, name="NVIDIA H100 80GB HBM3"):
    """One GPU of a stand-in state (a value None prints as [N/A])."""
    row = {"index": index, "uuid": uuid or "GPU-%08d" % index, "memory.total": total,
           "memory.free": free, "mig.mode.current": mig, "name": name}
    return {key: value for key, value in row.items() if value is not None}


class GpuFleet(Fleet):
    """A Fleet whose nodes have stand-in GPUs (see the module's documentation)."""

    def __init__(self, workdir, hosts=4, prefix="gpu", smi=True):
        self.smi = smi
        workdir = os.path.abspath(str(workdir))
        self.bin = os.path.join(workdir, "bin")
        self.state = os.path.join(workdir, "gpus")
        config = "SetEnv PATH=%s FAKE_GPU_DIR=%s\nAcceptEnv FAKE_GPU_NODE\n" % (self.bin, self.state)
        super().__init__(workdir, hosts=hosts, prefix=prefix, extra_sshd_config=config)

    def _setup(self):
        os.makedirs(self.bin, exist_ok=True)
        os.makedirs(self.state, exist_ok=True)
        for tool in TOOLS:
            found = shutil.which(tool, path="/usr/local/bin:/usr/bin:/bin")
            if found and not os.path.exists(os.path.join(self.bin, tool)):
                os.symlink(found, os.path.join(self.bin, tool))
        if self.smi:
            shutil.copy(STANDIN_SMI, os.path.join(self.bin, "nvidia-smi"))
            os.chmod(os.path.join(self.bin, "nvidia-smi"), 0o755)
        os.chmod(self.state, 0o755)
        super()._setup()
        with open(self.ssh_config) as fh:
            base = fh.read()
        per_host = "".join("Host %s\n    SetEnv FAKE_GPU_NODE=%s\n" % (host, host)
                           for host in self.hosts)
        with open(self.ssh_config, "w") as fh:
            fh.write(per_host + base)

    def set_gpus(self, node, gpus=(), apps=(), exit=0, message=None):
        """What ``node``'s nvidia-smi says from now on (written whole, then renamed)."""
        state = {"gpus": list(gpus), "apps": list(apps), "exit": exit}
        if message is not None:
            state["message"] = message
        path = os.path.join(self.state, node + ".json")
        with open(path + ".tmp", "w") as fh:
            json.dump(state, fh)
        os.chmod(path + ".tmp", 0o644)
        os.rename(path + ".tmp", path)

    def apps_dir(self, node):
        """A directory where a job (the test account) registers a compute process of
        ``node``: a file holding ``uuid pid MiB``."""
        path = os.path.join(self.state, node + ".apps.d")
        os.makedirs(path, exist_ok=True)
        os.chmod(path, 0o777)
        return path

    def log_calls(self, node):
        """Start counting ``node``'s nvidia-smi calls (see :meth:`calls`)."""
        path = os.path.join(self.state, node + ".calls")
        open(path, "w").close()
        os.chmod(path, 0o666)

    def calls(self, node):
        """The nvidia-smi calls of ``node`` since :meth:`log_calls`, one argument line each."""
        with open(os.path.join(self.state, node + ".calls")) as fh:
            return fh.read().splitlines()
