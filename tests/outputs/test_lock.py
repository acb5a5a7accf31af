"""The directory lock: one holder, named to the second comer, released by the OS on exit."""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from nemo_red.outputs import DirectoryLock, LockedError


def test_a_second_lock_is_refused_naming_the_holder(tmp_path):
    with DirectoryLock(tmp_path, "training"):
        with pytest.raises(LockedError) as err:
            DirectoryLock(tmp_path).acquire()
        message = str(err.value)
        assert f"PID {os.getpid()} on host {socket.gethostname()} (training since" in message
    DirectoryLock(tmp_path).acquire().release()  # free again once released


def test_a_killed_holder_releases_the_lock(tmp_path):
    code = (
        "import sys, time; from pathlib import Path;"
        "from nemo_red.outputs import DirectoryLock;"
        "DirectoryLock(Path(sys.argv[1])).acquire(); print('held', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockedError, match=f"PID {holder.pid} "):
            DirectoryLock(tmp_path).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    deadline = time.time() + 10
    while True:  # the OS drops a dead process's locks at once; allow for slow reaping
        try:
            DirectoryLock(tmp_path).acquire().release()
            break
        except LockedError:
            assert time.time() < deadline
            time.sleep(0.05)
