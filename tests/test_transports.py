"""Transports for real: local subprocesses, a real sshd on 127.0.0.1, and the fake adb over a sandbox."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from sshd import start_sshd
from topformer_deploy.bench.devices import open_transport
from topformer_deploy.bench.lock import device_lock, lock_path
from topformer_deploy.bench.transports import (AdbTransport, DeviceError, LocalTransport, SshTransport,
                                               list_adb_devices)
from topformer_deploy.errors import TopformerDeployError

FAKE_ADB = Path(__file__).parent / "fakes" / "adb"
TRICKY = ["a b", "it's", 'say "hi"', "$(touch PWNED)", "`touch PWNED`", "x;touch PWNED", "*", "\\n"]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


@pytest.fixture
def ssh(sshd):
    return SshTransport("127.0.0.1", sshd.user, sshd.port, config_file=str(sshd.config))


@pytest.fixture
def fake_adb(tmp_path, monkeypatch):
    """The fake adb's device sandbox; returns its /data/local/tmp (must be empty after every test)."""
    sandbox = tmp_path / "device"
    monkeypatch.setenv("FAKE_ADB_SANDBOX", str(sandbox))
    monkeypatch.setenv("FAKE_ADB_LOG", str(tmp_path / "adb.log"))
    monkeypatch.setenv("ADB", str(FAKE_ADB))
    for var in ("FAKE_ADB_STATE", "FAKE_ADB_OLD", "FAKE_ADB_DROP_ON", "FAKE_ADB_SERIAL"):
        monkeypatch.delenv(var, raising=False)
    (sandbox / "data" / "local" / "tmp").mkdir(parents=True)
    return sandbox / "data" / "local" / "tmp"


def _roundtrip(transport, tmp_path, cwd_check: Path):
    """run/shell/push/pull/temp_dir through ``transport``; tricky arguments arrive literally."""
    out = transport.run(["printf", "%s\\n", *TRICKY]).stdout
    assert out.splitlines() == TRICKY
    assert not (cwd_check / "PWNED").exists()
    assert transport.run(["sh", "-c", "exit 7"], check=False).returncode == 7
    with pytest.raises(DeviceError, match="exit 3"):
        transport.run(["sh", "-c", "echo boom >&2; exit 3"])
    assert transport.shell("echo a | tr a b").stdout.strip() == "b"
    local = tmp_path / "payload.bin"
    local.write_bytes(os.urandom(4096))
    with transport.temp_dir() as remote_dir:
        transport.push(local, f"{remote_dir}/p.bin")
        transport.pull(f"{remote_dir}/p.bin", tmp_path / "back.bin")
        assert (tmp_path / "back.bin").read_bytes() == local.read_bytes()
        listing = transport.run(["ls", remote_dir]).stdout.split()
        assert listing == ["p.bin"]
    assert transport.run(["test", "-e", remote_dir], check=False).returncode != 0
    return remote_dir


def test_local_roundtrip(tmp_path):
    remote = _roundtrip(LocalTransport(), tmp_path, Path.cwd())
    assert not Path(remote).exists()


def test_ssh_roundtrip(ssh, tmp_path):
    remote = _roundtrip(ssh, tmp_path, Path.home())
    assert not Path(remote).exists()  # the sshd is this machine, so the remote dir is checkable here


def test_ssh_temp_dir_removed_on_error_and_interrupt(ssh):
    for exc in (RuntimeError, KeyboardInterrupt):
        with pytest.raises(exc):
            with ssh.temp_dir() as remote:
                assert Path(remote).is_dir()
                raise exc()
        assert not Path(remote).exists()


def test_ssh_closed_port_fails_fast():
    from sshd import free_port

    start = time.monotonic()
    with pytest.raises(DeviceError, match="Connection refused|connect to host"):
        SshTransport("127.0.0.1", "nobody", free_port()).run(["true"])
    assert time.monotonic() - start < 10


def test_open_transport_parses_and_refuses():
    t = open_transport("ssh:pi@raspberrypi.local:2222")
    assert (t.user, t.host, t.port, t.name) == ("pi", "raspberrypi.local", 2222, "ssh:pi@raspberrypi.local:2222")
    assert open_transport("ssh:myboard").destination == "myboard"
    assert open_transport("local").name == "local"
    for bad in ("ssh:pi@-oProxyCommand=touch_x", "ssh:a b@host", "ssh:pi@host;id", "ssh:pi@host:99999",
                "usb", "ssh:"):
        with pytest.raises(TopformerDeployError):
            open_transport(bad)


def test_adb_roundtrip_and_sandbox_clean(fake_adb, tmp_path):
    adb = open_transport("adb")            # the only device, found with `adb devices -l`
    assert adb.name == "adb:emulator-5554"
    remote = _roundtrip(adb, tmp_path, fake_adb)
    assert remote.startswith("/data/local/tmp/")
    assert list(fake_adb.iterdir()) == []


def test_adb_old_client_exit_codes_recovered(fake_adb, monkeypatch):
    monkeypatch.setenv("FAKE_ADB_OLD", "1")     # adb always exits 0, CRLF, stderr merged
    adb = AdbTransport("emulator-5554")
    result = adb.run(["sh", "-c", "echo out; exit 5"], check=False)
    assert (result.returncode, result.stdout) == (5, "out\n")
    with pytest.raises(DeviceError, match="exit 1"):
        adb.run(["false"])
    assert adb.run(["printf", "%s\\n", *TRICKY]).stdout.splitlines() == TRICKY


@pytest.mark.parametrize("state, words", [("offline", "offline"), ("unauthorized", "unauthorized"),
                                          ("no permissions (missing udev rules? user is in the plugdev group)",
                                           "no permissions")])
def test_adb_not_ready_is_a_clear_error(fake_adb, monkeypatch, state, words):
    monkeypatch.setenv("FAKE_ADB_STATE", state)
    start = time.monotonic()
    with pytest.raises(DeviceError, match=words):
        open_transport("adb:emulator-5554")
    with pytest.raises(DeviceError, match=words):
        open_transport("adb")
    assert time.monotonic() - start < 10


def test_adb_serial_with_metacharacters_is_refused(fake_adb, tmp_path):
    pwned = tmp_path / "pwned"
    for serial in (f"a;touch {pwned}", f"$(touch {pwned})", "-H evil", "a b"):
        with pytest.raises(TopformerDeployError, match="refusing adb serial"):
            open_transport(f"adb:{serial}")
    assert not pwned.exists()
    assert not (tmp_path / "adb.log").exists()       # adb was never even called


def test_adb_dropped_connection(fake_adb, monkeypatch):
    adb = AdbTransport("emulator-5554")
    monkeypatch.setenv("FAKE_ADB_DROP_ON", "sleep 5")
    start = time.monotonic()
    with pytest.raises(DeviceError, match="connection lost"):
        adb.run(["sleep", "5"])
    assert time.monotonic() - start < 4


def test_adb_unknown_serial_and_missing_adb(fake_adb, tmp_path):
    with pytest.raises(DeviceError, match="not found"):
        open_transport("adb:other-serial")
    with pytest.raises(DeviceError, match="adb not found"):
        open_transport("adb", adb_path=str(tmp_path / "no-adb"))


def test_list_adb_devices(fake_adb, monkeypatch):
    ready = list_adb_devices()
    assert [(d["serial"], d["state"], d["model"], d["soc"], d["platform"]) for d in ready] == [
        ("emulator-5554", "device", "Fake Phone 1", "SM8250", "kona")]
    monkeypatch.setenv("FAKE_ADB_STATE", "unauthorized")
    assert [(d["state"], d["soc"]) for d in list_adb_devices()] == [("unauthorized", None)]


def test_device_lock_waits_for_the_holder(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    events = []
    held = threading.Event()

    def holder():
        with device_lock("ssh:pi@board"):
            held.set()
            time.sleep(1.0)
            events.append("released")

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(5)
    waits = []
    with device_lock("ssh:pi@board", on_wait=waits.append):
        events.append("acquired")
    thread.join()
    assert events == ["released", "acquired"]
    assert waits and "pid" in waits[0]
    assert lock_path("ssh:pi@board").parent == tmp_path / "topformer-deploy" / "locks"
    with device_lock("adb:X"):                         # another device: no waiting
        with pytest.raises(DeviceError, match="busy"):
            with device_lock("adb:X", timeout=0.3):
                pass
