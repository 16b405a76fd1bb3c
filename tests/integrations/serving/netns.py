"""Tests that start a server keep every packet on loopback: they run inside a network namespace that has only
``lo`` (``unshare -n``, then ``ip link set lo up``), where Ray, too, uses 127.0.0.1 for everything.

A server test module sets ``pytestmark = loopback_only``: outside such a namespace its tests skip, and
``test_in_namespace.py`` runs those modules again inside one, in a single pytest process (one Ray start per
module); inside one (``make test`` run under ``unshare -n``, or that re-run) they run directly.
"""
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def only_loopback() -> bool:
    """True inside a network namespace whose only interface is loopback."""
    try:
        return [name for _, name in socket.if_nameindex()] == ["lo"]
    except OSError:
        return False


ONLY_LOOPBACK = only_loopback()
loopback_only = pytest.mark.skipif(not ONLY_LOOPBACK, reason="starts a server: runs inside a loopback-only network "
                                                             "namespace, from test_in_namespace.py")


def why_no_namespace() -> str | None:
    """None when ``unshare -n`` can make a namespace here, else the reason it cannot."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "no unshare / ip command to make a loopback-only network namespace"
    command = ["unshare", "-n", "sh", "-c", "ip link set lo up"] if os.geteuid() == 0 else \
        ["unshare", "-rn", "sh", "-c", "ip link set lo up"]
    probe = subprocess.run(command, capture_output=True, text=True, timeout=30)
    if probe.returncode:
        return f"cannot make a loopback-only network namespace here: {probe.stderr.strip() or probe.returncode}"
    return None


def run_in_namespace(paths: list[str], timeout: float) -> subprocess.CompletedProcess:
    """``python -m pytest paths`` inside a fresh loopback-only network namespace."""
    unshare = ["unshare", "-n"] if os.geteuid() == 0 else ["unshare", "-rn"]
    command = [*unshare, "sh", "-c", 'ip link set lo up && exec "$@"', "sh", sys.executable, "-m", "pytest", "-x",
               "-q", "-p", "no:cacheprovider", *paths]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
