"""The submission's own user: every process of the submission runs as it, it can reach only its work
directory, and it is ended, all of it, before anything is scored.

Gradescope runs the autograder as root, and so does a course's own grading machine; code that ran
as root (or as the instructor) could read the held-out labels, rewrite the results or signal the
grader. So the kernel is started through `setpriv` as an unprivileged user made for grading, with
no supplementary groups, `no_new_privs` (no setuid program can give privileges back) and a cap on
its number of processes. Everything else is arranged with plain file permissions, which need no
container privileges: the autograder's files and the results directory are root's alone.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

USER = "cgcnn-student"  # Gradescope's one grading at a time; parallel local gradings take one user each
MAX_PROCESSES = 256  # RLIMIT_NPROC for the user: a fork bomb stops there, and the grader can end it
# One grading per user at a time (the end of a grading ends every process of its user): a lock in a
# folder of root's, which no grading user can create, hold or replace.
LOCKS = Path("/run/cgcnn-grading")


class SandboxError(RuntimeError):
    """The grading sandbox cannot be set up; the message says what to do."""


def require_root() -> None:
    if os.geteuid() != 0:
        raise SandboxError("grading runs each submission as a user of its own, which only root can create "
                           "and switch to: run the grader as root (as Gradescope does), e.g. with sudo")


def ensure_user(name: str = USER) -> pwd.struct_passwd:
    """The grading user, created on first use: a system user with no home, no shell and no password."""
    require_root()
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    done = subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                           "--shell", "/usr/sbin/nologin", name], capture_output=True, text=True)
    if done.returncode != 0 and "already exists" not in done.stderr:
        raise SandboxError(f"could not create the grading user {name!r}: {done.stderr.strip()}")
    return pwd.getpwnam(name)


@contextlib.contextmanager
def grading_user(name: str = USER):
    """The grading user `name`, held for this grading alone: created on first use, Python made
    reachable for it, a lock taken (a second grading with the same user waits for this one), and on
    the way out every process of the user ended."""
    if not re.fullmatch(r"cgcnn-student(-\d+)?", name):
        raise SandboxError(f"grading users are named cgcnn-student or cgcnn-student-N, not {name!r}")
    user = ensure_user(name)
    make_python_reachable(user)
    LOCKS.mkdir(mode=0o700, exist_ok=True)
    info = os.lstat(LOCKS)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != 0 or info.st_mode & 0o077:
        raise SandboxError(f"{LOCKS} must be a folder of root's alone (mode 700): remove it and grade again")
    with open(LOCKS / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            end_all(user.pw_uid)  # nothing of an earlier grading that was itself killed
            yield user
        finally:
            end_all(user.pw_uid)


def private(path: Path) -> None:
    """Root's alone: neither readable nor writable nor searchable by the grading user. A program keeps
    its owner's execute bit (root runs a file only if some execute bit is set: run_autograder)."""
    os.chown(path, 0, 0)
    os.chmod(path, 0o700 if path.is_dir() or path.stat().st_mode & 0o100 else 0o600)


def make_python_reachable(user: pwd.struct_passwd) -> list[str]:
    """Let the grading user run this Python: where a folder above the interpreter or its packages is
    closed to other users (pyenv under /root, Gradescope's /root/miniforge3), open it for search
    only (o+x: entering by exact name, never listing). Returns the folders changed."""
    changed = []
    roots = {Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve(), Path(sys.executable).resolve().parent}
    for root in sorted(roots):
        for folder in [root, *root.parents]:
            mode = folder.stat().st_mode
            if not mode & stat.S_IXOTH:
                os.chmod(folder, mode | stat.S_IXOTH)
                changed.append(str(folder))
    return changed


def cannot_read(user: pwd.struct_passwd, paths: list[Path]) -> None:
    """Proof, as the grading user itself, that none of `paths` can be read or listed."""
    script = 'for p; do if test -r "$p" || test -w "$p" || { test -d "$p" && test -x "$p"; }; then echo "$p"; fi; done'
    done = subprocess.run(as_user(user, ["sh", "-c", script, "sh", *map(str, paths)]), capture_output=True,
                          text=True, env={"PATH": "/usr/bin:/bin"}, timeout=60)
    readable = done.stdout.split()
    if done.returncode != 0 or readable:
        raise SandboxError(f"the grading user could read {', '.join(readable) or '(check failed)'}: "
                           f"grading stopped before running the submission {done.stderr.strip()}")


def as_user(user: pwd.struct_passwd, argv: list[str]) -> list[str]:
    """`argv` run as `user`: no groups, no way back to privileges, at most MAX_PROCESSES processes."""
    return ["prlimit", f"--nproc={MAX_PROCESSES}", "--",
            "setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", "--no-new-privs",
            "--", *argv]


def work_directory(user: pwd.struct_passwd, parent: Path) -> Path:
    """A fresh directory that belongs to the grading user (the only place it may write)."""
    path = parent / "work"
    path.mkdir()
    os.chown(path, user.pw_uid, user.pw_gid)
    os.chmod(path, 0o700)
    return path


def give(user: pwd.struct_passwd, root: Path) -> None:
    """Hand `root` and everything under it to the grading user."""
    for folder, dirs, files in os.walk(root):
        for name in [folder, *(os.path.join(folder, n) for n in dirs + files)]:
            os.lchown(name, user.pw_uid, user.pw_gid)


def processes(uid: int) -> list[int]:
    """The pids of every live process that runs as `uid` (zombies have ended: they only wait to be
    reaped by their parent)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid and _state(entry) != "Z":
                    pids.append(int(entry))
            except OSError:
                pass  # ended meanwhile
    return pids


def _state(pid: str) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def cpu_seconds(uid: int) -> float:
    """CPU time used so far by the processes of `uid` (with their children that have ended)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in processes(uid):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(fields[k]) for k in (11, 12, 13, 14))  # utime stime cutime cstime
        except (OSError, IndexError, ValueError):
            pass
    return total / ticks


def end_all(uid: int, patience: float = 10.0) -> set[int]:
    """Kill every process of `uid` until none is left (a process may fork while we kill); return the
    pids killed. Raises SandboxError if some survive `patience` seconds."""
    if uid == 0:
        raise SandboxError("refusing to end root's processes")
    killed, deadline = set(), time.monotonic() + patience
    while True:
        pids = processes(uid)
        if not pids:
            return killed
        if time.monotonic() > deadline:
            raise SandboxError(f"{len(pids)} processes of the grading user would not end")
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except OSError:
                pass
        time.sleep(0.05)


def copy_into(src: Path, dest: Path) -> None:
    """Copy a file or folder; links stay links (root must never copy what a link points to)."""
    if src.is_dir() and not src.is_symlink():
        shutil.copytree(src, dest, symlinks=True, dirs_exist_ok=True)
    else:
        shutil.copy2(src, dest, follow_symlinks=False)


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
