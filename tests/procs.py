"""Helpers for tests that run real processes: a Python snippet as a child process, its result, a file to wait for."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

PY = sys.executable


def script(body: str) -> str:
    """A child's program: ``body`` (dedented) after the imports every such test uses."""
    return "import ksds, os, sys, threading, time\n" + textwrap.dedent(body)


def start(body: str, *args: str) -> subprocess.Popen[str]:
    """Run ``body`` in a new Python process with ``args`` as its ``sys.argv[1:]``."""
    return subprocess.Popen(
        [PY, "-c", script(body), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(proc: subprocess.Popen[str], timeout: float = 120) -> str:
    """Wait for a child; its standard output (it must exit 0)."""
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out}\n{err}"
    return out


def wait_for(path: str, timeout: float = 30) -> None:
    """Wait until ``path`` exists (a child's signal that it got somewhere)."""
    end = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > end:
            raise TimeoutError(path)
        time.sleep(0.005)


def run_all(commands: list[list[str]], env: dict[str, str]) -> list[subprocess.CompletedProcess[str]]:
    """Run several commands at once (none of them may write a file another reads); their results, in order."""
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for c in commands]
    done = []
    for c, p in zip(commands, procs, strict=True):
        out, err = p.communicate(timeout=120)
        done.append(subprocess.CompletedProcess(c, p.returncode, out, err))
    return done
