"""The submission's own user and its sealed box: every process of the submission runs as that user,
inside a box the operating system keeps, and it is ended, all of it, before anything is scored.

Gradescope runs the autograder as root, and so does a course's own grading machine; code that ran
as root (or as the instructor) could read the held-out labels, rewrite the results or signal the
grader. So the kernel is started through `setpriv` as an unprivileged user made for grading, with
no supplementary groups, `no_new_privs` (no setuid program can give privileges back) and a cap on
its number of processes (RLIMIT_NPROC). Around it, where the platform allows (`Box`):

- namespaces, made by bubblewrap: its own PID namespace (when the box ends every process and thread
  in it ends), its own network namespace (loopback only: no other grading's ports), IPC and UTS
  namespaces, and a mount namespace holding only the Python installation and the system (read-only),
  the kernel module's folder (read-only), its work directory and socket folder, a minimal /dev, its
  own /proc and a private /tmp. The repository, the autograder's folder and the results do not exist
  in it, whatever their permissions;
- its own cgroup (v1 here, v2 where that is mounted): a memory limit below the container's budget (the
  kernel is killed, the grader goes on), a pids limit, CPU time from the cgroup's accounting (every
  thread, exited or not), and at the end the whole group frozen, killed and removed.

Where the platform refuses namespaces or cgroups (a container without the privileges), the box
falls back to what needs none: the user, RLIMIT_NPROC, RLIMIT_AS and RLIMIT_FSIZE, and processes found
by their uid in /proc (a leader that exited with live threads included). In every mode the kernel's
sockets are Unix sockets in a folder of its own user's (mode 700), and the kernel is the process the
out-of-memory killer takes first (oom_score_adj 1000, the grader's -500). `Box.describe()` says which
mode ran.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import pwd
import re
import shlex
import shutil
import signal
import site
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
LOCAL_USERS = 32  # local gradings at once on one machine (build.py grade, the tests): cgcnn-student-1..32
CGROUPS = Path("/sys/fs/cgroup")
V1_CONTROLLERS = ("memory", "pids", "cpuacct", "freezer")
MODE_VARIABLE = "CGCNN_SANDBOX"  # the grader's environment: "fallback" turns namespaces and cgroups off (to measure)


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


def lock_path(name: str) -> Path:
    if not re.fullmatch(r"cgcnn-student(-\d+)?", name):
        raise SandboxError(f"grading users are named cgcnn-student or cgcnn-student-N, not {name!r}")
    LOCKS.mkdir(mode=0o700, exist_ok=True)
    info = os.lstat(LOCKS)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != 0 or info.st_mode & 0o077:
        raise SandboxError(f"{LOCKS} must be a folder of root's alone (mode 700): remove it and grade again")
    return LOCKS / f"{name}.lock"


@contextlib.contextmanager
def claimed_user(preferred: str | None = None, count: int = LOCAL_USERS, poll: float = 1.0):
    """For a local grader, before it starts a run's clock: a grading user that no other grading on this
    machine holds, `preferred` when it is free, else the first free of cgcnn-student-1..`count`, with its
    lock held until the block ends. Yields (name, descriptor of the lock): the run is given both
    (grading_user's `held`), so that the time spent waiting for a user is never the submission's.
    Waits only when every user is busy (`count` gradings on this machine at once)."""
    names = ([preferred] if preferred else []) + [f"{USER}-{k}" for k in range(1, count + 1) if f"{USER}-{k}" != preferred]
    told = False
    while True:
        for name in names:
            lock = open(lock_path(name), "w")
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.close()
                continue
            try:
                yield name, lock.fileno()
            finally:
                lock.close()  # releases the lock: the run that shared it has ended
            return
        if not told:
            print(f"all {count} grading users are busy (other gradings on this machine): waiting for one",
                  file=sys.stderr)
            told = True
        time.sleep(poll)


@contextlib.contextmanager
def grading_user(name: str = USER, held: int | None = None):
    """The grading user `name`, held for this grading alone: created on first use, Python made
    reachable for it, a lock taken (a second grading with the same user waits for this one), and on
    the way out every process of the user ended. `held`: a descriptor of that lock which the caller
    holds already (claimed_user), so nothing waits here."""
    path = lock_path(name)
    user = ensure_user(name)
    if held is not None:
        os.set_inheritable(held, False)  # the kernel, which runs as the user, must never get it
        info, lock_info = os.fstat(held), os.stat(path)
        if (info.st_dev, info.st_ino) != (lock_info.st_dev, lock_info.st_ino):
            raise SandboxError(f"descriptor {held} is not the lock of {name} ({path})")
        try:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the caller's own lock: taken at once
        except BlockingIOError:
            raise SandboxError(f"the lock of {name} given as descriptor {held} is not held by the caller") from None
        lock = contextlib.nullcontext(held)  # the caller's to release, when its run has ended
    else:
        lock = open(path, "w")
    with lock:
        if held is None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            Cgroup.remove_stale(name)  # the box of an earlier grading that was itself killed
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


def cannot_read(user: "pwd.struct_passwd | Box", paths: list[Path]) -> None:
    """Proof, as the grading user itself (inside its box, when given one: what the kernel will see),
    that none of `paths` can be read or listed."""
    # a folder the box made to hold a mount point (a repository holding .venv) may be entered: only the
    # mount is in it, and the files asked about are checked by name
    script = ('for p; do case "$p" in rw:*) q=${p#rw:}; if test -r "$q" || test -w "$q"; then echo "$q"; fi;; '
              '*) if test -r "$p" || test -w "$p" || { test -d "$p" && test -x "$p"; }; then echo "$p"; fi;; '
              'esac; done')
    made = user.made if isinstance(user, Box) else set()
    argv = ["sh", "-c", script, "sh", *(f"rw:{p}" if Path(p) in made else str(p) for p in paths)]
    command = user.command(argv, join=False) if isinstance(user, Box) else as_user(user, argv)
    done = subprocess.run(command, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}, timeout=60)
    readable = done.stdout.split()
    if done.returncode != 0 or readable:
        hint = ""
        if isinstance(user, Box) and not user.namespaces:
            hint = (f"; without namespaces ({user.refused['namespaces']}) the kernel sees this machine's files as "
                    "its user: close them to other users (chmod o-rwx), or grade where bubblewrap works")
        raise SandboxError(f"the grading user could read {', '.join(readable) or '(check failed)'}: "
                           f"grading stopped before running the submission{hint} {done.stderr.strip()}")


def as_user(user: pwd.struct_passwd, argv: list[str]) -> list[str]:
    """`argv` run as `user`: no groups, no way back to privileges, at most MAX_PROCESSES processes."""
    return ["prlimit", f"--nproc={MAX_PROCESSES}", "--",
            "setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", "--no-new-privs",
            "--", *argv]


def work_directory(user: pwd.struct_passwd, parent: Path, name: str = "work") -> Path:
    """A fresh directory that belongs to the grading user alone (mode 700): its work directory (the only
    place it may write), or the folder of its kernel's sockets."""
    path = parent / name
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
    """The pids of every live process that runs as `uid`. A zombie has ended (it only waits to be
    reaped), unless only its main thread has: a leader that called pthread_exit shows state Z while
    its other threads run, and those are found through /proc/PID/task."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid == uid and _alive(entry):
                    pids.append(int(entry))
            except OSError:
                pass  # ended meanwhile
    return pids


def _alive(pid: str) -> bool:
    if _state(f"/proc/{pid}") != "Z":
        return True
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            if _state(f"/proc/{pid}/task/{task}") != "Z":
                return True
        except OSError:
            pass
    return False


def _state(path: str) -> str:
    return Path(f"{path}/stat").read_text().rsplit(")", 1)[1].split()[0]


def cpu_seconds(uid: int) -> float:
    """CPU time used so far by the processes of `uid` (with their children that have ended, and every
    thread of each, the leader's own having exited or not); the fallback's measure, where there is no
    cgroup: a process that ended without being waited for by one of them is not counted."""
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


# ---------------------------------------------------------------------------------------------
# The cgroup of one grading
# ---------------------------------------------------------------------------------------------

def _own_cgroup(controller: str | None) -> Path:
    """This process's cgroup for `controller` (v1), or its v2 cgroup (None): new groups go inside it,
    so that whatever limits this process (Gradescope's container, a benchmark's 768 MB) limits them too."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if (controller is None and controllers == "") or (controller and controller in controllers.split(",")):
            base = CGROUPS / controller if controller else CGROUPS
            inside = base / path.lstrip("/")
            return inside if inside.is_dir() else base  # in a container the own group is mounted at the root
    raise OSError(f"this process is in no {controller or 'v2'} cgroup")


class Cgroup:
    """One grading's cgroup, named after its grading user (one grading per user at a time): a memory
    limit, a pids limit, CPU time of every task that ever ran in it, and freeze-and-kill. cgroup v2
    where /sys/fs/cgroup is the unified hierarchy, else v1's memory, pids, cpuacct and freezer."""

    def __init__(self, name: str):
        self.name = name
        self.v2 = (CGROUPS / "cgroup.controllers").is_file()
        self.dirs = {None: _own_cgroup(None) / name} if self.v2 else \
            {c: _own_cgroup(c) / name for c in V1_CONTROLLERS}

    @classmethod
    def create(cls, name: str, memory_mb: int, max_tasks: int) -> "Cgroup":
        """The cgroup, made empty with its limits; raises OSError where the platform refuses."""
        group = cls(name)
        group.destroy()  # one an earlier grading of this user left
        try:
            for path in group.dirs.values():
                path.mkdir()
            limit = str(memory_mb * 1024 * 1024)
            if group.v2:
                path = group.dirs[None]
                missing = [f for f in ("memory.max", "pids.max", "cgroup.freeze") if not (path / f).exists()]
                if missing:  # controllers not delegated to this process's group
                    raise OSError(f"cgroup v2 at {path.parent} does not give its children {', '.join(missing)}")
                (path / "memory.max").write_text(limit)
                if (path / "memory.swap.max").exists():
                    (path / "memory.swap.max").write_text("0")
                (path / "pids.max").write_text(str(max_tasks))
            else:
                memory = group.dirs["memory"]
                (memory / "memory.limit_in_bytes").write_text(limit)
                if (memory / "memory.memsw.limit_in_bytes").exists():  # memory + swap: no swapping around it
                    (memory / "memory.memsw.limit_in_bytes").write_text(limit)
                (group.dirs["pids"] / "pids.max").write_text(str(max_tasks))
        except OSError:
            group.destroy()
            raise
        return group

    @classmethod
    def remove_stale(cls, name: str) -> None:
        try:
            cls(name).destroy()
        except OSError:
            pass  # no cgroups here: nothing can be stale

    def join_prefix(self) -> list[str]:
        """A command prefix that moves the command into this cgroup before it runs anything (the shell
        writes its own pid, then execs the command)."""
        files = [path / "cgroup.procs" for path in self.dirs.values()]
        script = " && ".join(f"echo $$ > {shlex.quote(str(f))}" for f in files) + ' && exec "$@"'
        return ["sh", "-c", script, "sh"]

    def _read(self, controller: str | None, name: str) -> str:
        return (self.dirs[None if self.v2 else controller] / name).read_text()

    def pids(self) -> list[int]:
        try:
            return [int(p) for p in self._read("freezer", "cgroup.procs").split()]
        except OSError:
            return []

    def cpu_seconds(self) -> float:
        """CPU time of every task that ran in the group, ended ones included."""
        if self.v2:
            stat_ = dict(line.split() for line in self._read(None, "cpu.stat").splitlines())
            return int(stat_["usage_usec"]) / 1e6
        return int(self._read("cpuacct", "cpuacct.usage")) / 1e9

    def memory_peak_mb(self) -> float | None:
        try:
            name = "memory.peak" if self.v2 else "memory.max_usage_in_bytes"
            return int(self._read("memory", name)) / 2 ** 20
        except (OSError, ValueError):
            return None

    def oom_kills(self) -> int:
        try:
            text = self._read("memory", "memory.events" if self.v2 else "memory.oom_control")
        except OSError:
            return 0
        return next((int(line.split()[1]) for line in text.splitlines() if line.startswith("oom_kill ")), 0)

    def end(self, patience: float = 10.0) -> list[int]:
        """Freeze the group (no task can fork or run while it is being killed), kill every task, thaw so
        that the kills are delivered, and wait until the group is empty. Returns the pids killed."""
        freeze = ("cgroup.freeze", "1", "0") if self.v2 else ("freezer.state", "FROZEN", "THAWED")
        folder = self.dirs[None if self.v2 else "freezer"]
        killed, deadline = [], time.monotonic() + patience
        while True:
            pids = self.pids()
            if not pids:
                return killed
            if time.monotonic() > deadline:
                raise SandboxError(f"{len(pids)} processes of the cgroup {folder} would not end")
            try:
                (folder / freeze[0]).write_text(freeze[1])
                for _ in range(100):  # until frozen (a task in uninterruptible sleep freezes late)
                    state = (folder / ("cgroup.events" if self.v2 else "freezer.state")).read_text()
                    if ("frozen 1" in state) if self.v2 else state.strip() == "FROZEN":
                        break
                    time.sleep(0.01)
            except OSError:
                pass  # killed unfrozen: the loop comes round again for what forked meanwhile
            for pid in self.pids():
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                except OSError:
                    pass
            try:
                (folder / freeze[0]).write_text(freeze[2])
            except OSError:
                pass
            time.sleep(0.02)

    def destroy(self) -> None:
        """End what is left in the group and remove it (a missing group is fine)."""
        if not all(path.is_dir() for path in self.dirs.values()):
            if not any(path.is_dir() for path in self.dirs.values()):
                return
        elif self.pids():
            self.end()
        for path in self.dirs.values():
            for _ in range(50):  # an ended task leaves its group a moment after it is reaped
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)


# ---------------------------------------------------------------------------------------------
# The box
# ---------------------------------------------------------------------------------------------

BWRAP_NAMESPACES = ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
                    "--die-with-parent", "--new-session"]


@functools.lru_cache(maxsize=1)
def namespaces_refused() -> str | None:
    """Why this platform gives no namespaces to a grading (None: it does), found by trying once."""
    if os.environ.get(MODE_VARIABLE) == "fallback":
        return f"turned off ({MODE_VARIABLE}=fallback)"
    if not shutil.which("bwrap"):
        return "bwrap not found (Debian's bubblewrap package)"
    try:
        done = subprocess.run(["bwrap", *BWRAP_NAMESPACES, "--ro-bind", "/", "/", "--proc", "/proc", "--", "true"],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"bwrap could not run ({err})"
    return None if done.returncode == 0 else f"bwrap refused: {done.stderr.strip()[:200]}"


def python_roots() -> list[Path]:
    """The folders the kernel's Python needs: its installation (a virtual environment and the Python it
    was made from) and the user site-packages, as real paths."""
    roots = {Path(sys.prefix), Path(sys.base_prefix), Path(sys.executable).parent,
             Path(os.path.realpath(sys.executable)).parent.parent}
    user_site = site.getusersitepackages() if site.ENABLE_USER_SITE else None
    if user_site and Path(user_site).is_dir():
        roots.add(Path(user_site))
    return sorted({Path(os.path.realpath(r)) for r in roots} | {r for r in roots if r.is_dir()})


class Box:
    """The sealed box of one grading (see the module's docstring): `command(argv)` runs `argv` in it as
    the grading user. Use as a context manager: on exit every process of it is ended and its cgroup
    removed. `work` (the user's, read-write), `kernel_dir` (read-only) and `sockets` (the user's, for
    the kernel's Unix sockets) are the only folders of this machine's it sees besides the system and
    Python, when namespaces work here."""

    def __init__(self, user: pwd.struct_passwd, work: Path, kernel_dir: Path, sockets: Path, limits):
        self.user, self.work, self.kernel_dir, self.sockets, self.limits = user, work, kernel_dir, sockets, limits
        self.refused: dict[str, str] = {}
        self.made: set[Path] = set()  # the empty folders the box makes above its mount points
        reason = namespaces_refused()
        self.namespaces = reason is None
        if reason:
            self.refused["namespaces"] = reason
            make_python_reachable(user)  # without a mount namespace the user must reach Python on the host
        self.cgroup: Cgroup | None = None
        if os.environ.get(MODE_VARIABLE) == "fallback":
            self.refused["cgroup"] = f"turned off ({MODE_VARIABLE}=fallback)"
        else:
            try:
                self.cgroup = Cgroup.create(user.pw_name, limits.memory_mb, MAX_PROCESSES)
            except OSError as err:
                self.refused["cgroup"] = f"refused: {err}"
        if self.namespaces:
            self._bwrap()  # the layout, and with it the folders made above mount points (`made`)
        try:  # the grader, which makes the box, is the out-of-memory killer's last choice (only root may go below 0)
            Path("/proc/self/oom_score_adj").write_text("-500")
        except OSError:
            pass  # a platform that refuses it: the kernel's 1000 still puts it first

    def __enter__(self) -> "Box":
        return self

    def __exit__(self, *exc) -> None:
        self.end()
        if self.cgroup:
            self.cgroup.destroy()

    @property
    def mode(self) -> str:
        return "box" if self.namespaces and self.cgroup else "fallback" if not (self.namespaces or self.cgroup) \
            else "partial"

    def command(self, argv: list[str], join: bool = True) -> list[str]:
        """`argv` as the grading user, inside the box; with `join`, counted in the box's cgroup."""
        limits = [f"--nproc={MAX_PROCESSES}", f"--fsize={self.limits.file_mb * 2 ** 20}"]
        if not self.cgroup:  # no memory cgroup: at least each process's address space is capped
            limits.append(f"--as={self.limits.address_space_mb * 2 ** 20}")
        # The kernel is what the out-of-memory killer takes first, wherever memory runs out: the grader
        # lives. The kernel may lower its own score to 0, never below (measured); the grader's is -500.
        choom = ["choom", "-n", "1000", "--"] if shutil.which("choom") else []  # util-linux 2.33 and later
        outer = [*(self.cgroup.join_prefix() if join and self.cgroup else []), *choom, "prlimit", *limits, "--"]
        inner = ["setpriv", f"--reuid={self.user.pw_uid}", f"--regid={self.user.pw_gid}", "--clear-groups",
                 "--no-new-privs", "--", *argv]
        return [*outer, *(self._bwrap() if self.namespaces else []), *inner]

    def _bwrap(self) -> list[str]:
        args, shown = ["bwrap", *BWRAP_NAMESPACES, "--hostname", "grading"], set()
        self.made = set()

        def folders(path: Path) -> None:  # the folders above a mount point, enterable but not listable
            for parent in reversed(path.parents):
                if str(parent) != "/" and parent not in shown:
                    args.extend(["--perms", "0711", "--dir", str(parent)])
                    shown.add(parent)
                    self.made.add(parent)

        def mount(kind: str, source: Path, dest: Path | None = None) -> None:
            dest = dest or source
            if any(dest == s or s in dest.parents for s in bound):
                return  # already inside a read-only mount
            folders(dest)
            args.extend([kind, str(source), str(dest)])
            shown.add(dest)

        bound: list[Path] = []
        for name in ("usr", "etc", "bin", "sbin", "lib", "lib64", "lib32", "libx32"):
            path = Path("/") / name
            if path.is_symlink():  # merged /usr: /bin -> usr/bin
                args.extend(["--symlink", os.readlink(path), str(path)])
            elif path.is_dir():
                mount("--ro-bind", path)
                bound.append(path)
        args += ["--dev", "/dev", "--proc", "/proc", "--perms", "1777", "--tmpfs", "/tmp"]
        shown.update({Path("/dev"), Path("/proc"), Path("/tmp")})
        for root in python_roots():
            mount("--ro-bind", root)
            bound.append(root)
        mount("--ro-bind", self.kernel_dir)
        for folder in (self.work, self.sockets):  # the only places it writes, besides its /tmp
            mount("--bind", folder)
        # ipykernel ends itself when its parent is pid 1 (its parent died, it assumes): here that is
        # bwrap's init; bwrap's --die-with-parent ends the box with the grader instead
        args += ["--setenv", "JPY_PARENT_PID", "1"]
        return [*args, "--chdir", str(self.work), "--"]

    def kernel_pid(self, outer: int) -> int:
        """The kernel's pid (in this process's PID namespace) among `outer`'s descendants: the first that
        runs as the grading user (bwrap and its init in between are root's)."""
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
                    children.setdefault(ppid, []).append(int(entry))
                except (OSError, IndexError, ValueError):
                    pass
        queue = [outer]
        while queue:
            pid = queue.pop(0)
            try:
                if os.stat(f"/proc/{pid}").st_uid == self.user.pw_uid:
                    return pid
            except OSError:
                continue
            queue += sorted(children.get(pid, []))
        return outer

    def cpu_seconds(self) -> float:
        return self.cgroup.cpu_seconds() if self.cgroup else cpu_seconds(self.user.pw_uid)

    def end(self) -> set[int]:
        """End every process of the box (the cgroup's, then any of the user's): the grading user's pids killed."""
        mine = set(processes(self.user.pw_uid))
        killed = set(self.cgroup.end()) if self.cgroup else set()
        killed = (killed & mine) | end_all(self.user.pw_uid)
        return killed

    def describe(self) -> dict:
        """Which mode ran and what it used: for the course staff only."""
        info = {"mode": self.mode, "kernel_transport": "ipc (Unix sockets in a folder of the grading user's, 700)",
                "namespaces": "pid, net, ipc, uts, mount (bwrap)" if self.namespaces else
                f"none: {self.refused['namespaces']}",
                "rlimits": f"nproc {MAX_PROCESSES}, fsize {self.limits.file_mb} MB"
                + ("" if self.cgroup else f", as {self.limits.address_space_mb} MB")}
        if self.cgroup:
            info["cgroup"] = (f"{'v2' if self.cgroup.v2 else 'v1'}: memory {self.limits.memory_mb} MB, pids "
                              f"{MAX_PROCESSES}, CPU time, freezer")
            peak = self.cgroup.memory_peak_mb()
            info["memory_peak_mb"] = None if peak is None else round(peak, 1)
            info["oom_kills"] = self.cgroup.oom_kills()
        else:
            info["cgroup"] = f"none: {self.refused['cgroup']}"
        return info
