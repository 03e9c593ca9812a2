"""ContainerProvider against a real docker engine, started here as /work/shared/CONTAINERS.md
describes: its own socket under a temp dir, no bridge, no iptables, a busybox image made locally
(no registry is reachable) and the machine's Python bind-mounted in, on host networking over
loopback. Where the engine cannot start the engine tests skip, or fail when
LIMIT_HARNESS_REQUIRE_SERVICES=1 (CI that promises the services).
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import docker
import pytest

from harness.errors import TargetError
from harness.faults import FaultRefused
from harness.faults.containers import ContainerProvider, docker_client
from harness.faults.process import free_port
from child_server import SERVER, answers

APT_TIMEOUT_S = 300
ENGINE_WAIT_S = 30
ENGINE_STOP_S = 10
ANSWER_WAIT_S = 10
PAUSED_READ_S = 0.5
IMAGE = "limit-base:1"
LABEL = "limit-harness-test"
# The setup may install packages first; the tests themselves take seconds.
pytestmark = pytest.mark.timeout(APT_TIMEOUT_S * 2 + ENGINE_WAIT_S + 60)

def unavailable(reason: str):
    if os.environ.get("LIMIT_HARNESS_REQUIRE_SERVICES") == "1":
        pytest.fail(f"docker engine required (LIMIT_HARNESS_REQUIRE_SERVICES=1): {reason}",
                    pytrace=False)
    pytest.skip(f"no docker engine: {reason}")


def install_engine() -> str | None:
    """Install dockerd and a static busybox (as root, through apt); the reason when it fails."""
    if shutil.which("dockerd") and shutil.which("busybox"):
        return None
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return "dockerd is missing and cannot be installed here (needs root and apt-get)"
    for argv in (["apt-get", "update"],
                 ["apt-get", "install", "-y", "--no-install-recommends", "docker.io",
                  "busybox-static"]):
        try:
            done = subprocess.run(argv, capture_output=True, timeout=APT_TIMEOUT_S,
                                  env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        except subprocess.TimeoutExpired:
            return f"{' '.join(argv[:2])} took more than {APT_TIMEOUT_S} s"
        if done.returncode != 0:
            last = (done.stderr.decode(errors="replace").strip().splitlines() or ["?"])[-1]
            return f"{' '.join(argv[:2])} exited with {done.returncode}: {last}"
    return None if shutil.which("dockerd") else "apt-get installed no dockerd"


def base_image_tar() -> bytes:
    """/bin/busybox and /bin/sh: enough of a root file system for `docker import`."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        tar.add(shutil.which("busybox"), arcname="bin/busybox")
        link = tarfile.TarInfo("bin/sh")
        link.type, link.linkname = tarfile.SYMTYPE, "busybox"
        tar.addfile(link)
    return data.getvalue()


@pytest.fixture(scope="module")
def engine():
    reason = install_engine()
    if reason:
        unavailable(reason)
    # A short path: a unix socket path must fit in 108 bytes.
    root = Path(tempfile.mkdtemp(prefix="limit-docker-", dir="/tmp"))
    socket_url = f"unix://{root}/docker.sock"
    log = open(root / "log", "wb")
    dockerd = subprocess.Popen(
        ["dockerd", "--storage-driver=vfs", "--iptables=false", "--ip-masq=false",
         "--bridge=none", "--data-root", f"{root}/data", "--exec-root", f"{root}/exec",
         "-H", socket_url, "--pidfile", f"{root}/pid"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    client = None
    try:
        client = _wait_for_engine(socket_url, dockerd, root)
        client.api.import_image_from_data(base_image_tar(), repository=IMAGE.split(":")[0],
                                          tag=IMAGE.split(":")[1])
        yield client
    finally:
        if client is not None:
            for container in client.containers.list(all=True, filters={"label": LABEL}):
                container.remove(force=True)
            client.close()
        _stop(dockerd)
        log.close()
        _unmount_under(root)
        shutil.rmtree(root, ignore_errors=True)


def _wait_for_engine(socket_url: str, dockerd: subprocess.Popen, root: Path):
    deadline_s = time.monotonic() + ENGINE_WAIT_S
    while time.monotonic() < deadline_s:
        if dockerd.poll() is not None:
            tail = (root / "log").read_text(errors="replace").strip().splitlines()[-1:] or ["?"]
            unavailable(f"dockerd exited with {dockerd.returncode}: {tail[0]}")
        try:
            client = docker.DockerClient(base_url=socket_url, timeout=10)
            client.ping()
            return client
        except (docker.errors.DockerException, OSError):
            time.sleep(0.2)
    _stop(dockerd)
    unavailable(f"dockerd did not answer on {socket_url} within {ENGINE_WAIT_S} s")


def _stop(dockerd: subprocess.Popen) -> None:
    if dockerd.poll() is None:
        dockerd.send_signal(signal.SIGTERM)
        try:
            dockerd.wait(ENGINE_STOP_S)
        except subprocess.TimeoutExpired:
            os.killpg(dockerd.pid, signal.SIGKILL)
            dockerd.wait(ENGINE_STOP_S)


def _unmount_under(root: Path) -> None:
    # dockerd leaves its network namespace bind-mounted under --exec-root after it exits.
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m.startswith(f"{root}/")), reverse=True):
        subprocess.run(["umount", mount], capture_output=True, timeout=ENGINE_STOP_S)


@pytest.fixture
def served(engine):
    """A container serving HTTP on a free loopback port with the machine's Python; returns
    (container name, URL). Removed at the end whatever the test did to it."""
    port = free_port()
    python = os.path.join(sys.base_prefix, "bin", "python3")
    mounts = {path: {"bind": path, "mode": "ro"}
              for path in ("/usr", "/lib", "/lib64", sys.base_prefix) if os.path.exists(path)}
    name = f"limit-test-{port}"
    container = engine.containers.run(IMAGE, [python, "-c", SERVER, str(port)], name=name,
                                      network_mode="host", volumes=mounts, detach=True,
                                      labels={LABEL: "1"})
    url = f"http://127.0.0.1:{port}/"
    try:
        assert wait_answers(url), f"container never answered: {container.logs()[-500:]!r}"
        yield name, url
    finally:
        container.remove(force=True)





def wait_answers(url: str) -> bool:
    deadline_s = time.monotonic() + ANSWER_WAIT_S
    while time.monotonic() < deadline_s:
        if answers(url, timeout_s=1.0):
            return True
        time.sleep(0.05)
    return False


def test_pause_makes_requests_time_out_until_unpaused(engine, served):
    name, url = served
    provider = ContainerProvider(engine, {"api": name})

    done = provider.inject({"kind": "process_pause"})

    assert done == {"fault_id": done["fault_id"], "kind": "process_pause", "container": "api",
                    "provider": "containers"}
    assert engine.containers.get(name).status == "paused"
    assert not answers(url, timeout_s=PAUSED_READ_S)
    assert [fault["fault_id"] for fault in provider.active()] == [done["fault_id"]]
    provider.remove(done["fault_id"])
    assert answers(url)
    assert provider.active() == []


def test_crash_restart_kills_and_starts_the_container_again(engine, served):
    name, url = served
    started_at = engine.containers.get(name).attrs["State"]["StartedAt"]
    provider = ContainerProvider(engine, {"api": name})

    provider.inject({"kind": "crash_restart"})

    container = engine.containers.get(name)
    assert container.status == "running"
    assert container.attrs["State"]["StartedAt"] != started_at
    assert wait_answers(url)
    assert provider.active() == []  # one shot


def test_clear_unpauses_every_container(engine, served):
    name, url = served
    provider = ContainerProvider(engine, {"projector": name}, {"pause_sync": "projector"},
                                 actions={"pause_sync": "pause"})
    provider.inject({"kind": "pause_sync"})
    provider.inject({"kind": "pause_sync"})
    provider.clear()
    assert engine.containers.get(name).status == "running" and answers(url)


def test_unknown_and_missing_containers_are_refused(engine, served):
    name, _ = served
    provider = ContainerProvider(engine, {"api": name, "ghost": "limit-no-such-container"})
    with pytest.raises(FaultRefused, match="no container named 'db'; known: api, ghost"):
        provider.inject({"kind": "process_pause", "container": "db"})
    with pytest.raises(FaultRefused, match="container ghost .* does not exist"):
        provider.inject({"kind": "crash_restart", "container": "ghost"})
    assert provider.active() == []


def test_a_partition_of_a_host_networked_container_is_refused(engine, served):
    name, url = served
    provider = ContainerProvider(engine, {"api": name}, network="limit-net")
    assert "network_partition" in provider.kinds()
    with pytest.raises(FaultRefused, match="uses host networking.*route network_partition to "
                                           "a proxy"):
        provider.inject({"kind": "network_partition"})
    assert answers(url)


@pytest.mark.timeout(30)
def test_an_unreachable_engine_is_one_line():
    missing = f"unix://{tempfile.gettempdir()}/limit-no-engine-{os.getpid()}.sock"
    with pytest.raises(TargetError, match="cannot reach the docker engine") as raised:
        docker_client(missing)
    assert "\n" not in str(raised.value)

    # A client made while the engine answered, used after it went away.
    client = docker.DockerClient(base_url=missing, version="1.41", timeout=2)
    provider = ContainerProvider(client, {"api": "limit-api"})
    with pytest.raises(FaultRefused, match="docker engine unreachable") as refused:
        provider.inject({"kind": "process_pause"})
    assert "\n" not in str(refused.value)
