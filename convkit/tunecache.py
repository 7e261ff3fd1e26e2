"""The tuning cache: which backend and algorithm won each kernel and problem on this machine.

One JSON file, ``tuning.json``, in ``CONVKIT_CACHE_DIR`` or else the user
cache dir (``platformdirs.user_cache_dir("convkit")``). Entries are keyed by
kernel, canonical spec (its descriptor) and thread count, and grouped under
a *machine signature*: CPU model and flags, convkit's version and every
registered backend's version. Only the group of the current signature is
read, so an entry measured on another CPU, or before a backend changed
version, is ignored (and kept for the other setup, e.g. another virtualenv).

Writes merge into what is on disk under a lock file (``fcntl.flock``;
``msvcrt.locking`` on Windows) and replace the file atomically (a temporary
file, then ``os.replace``), so several processes tuning at once leave one
valid file holding all of their results, and a reader never sees half a file.

Dispatch reads it through :func:`lookup`: the file is loaded once per
process into a dict, and loaded again only when its size or mtime changes
(looked at no more than once a second), the registry changes, or this
process writes it.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import logging
import os
import platform
import tempfile
import threading
import time
from pathlib import Path

from . import registry
from .errors import SpecError

try:  # POSIX; Windows has msvcrt; elsewhere writes are atomic but not serialized
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None
try:  # pragma: no cover
    import msvcrt
except ImportError:
    msvcrt = None

__all__ = ["MODES", "autotune_mode", "cache_dir", "cache_path", "signature", "Entry", "lookup", "store",
           "read_all", "clear", "remember", "reset"]

logger = logging.getLogger("convkit")

#: ``CONVKIT_AUTOTUNE`` values: never use the cache / use it (the default) / also measure on first sight.
MODES = ("off", "cached", "measure")
SCHEMA = "convkit-tuning/1"
FILENAME = "tuning.json"
#: How often (seconds) dispatch looks whether another process changed the file.
CHECK_EVERY_S = 1.0
#: Signature groups kept in the file (the most recently updated ones).
MAX_SIGNATURES = 8


def autotune_mode() -> str:
    """``CONVKIT_AUTOTUNE``: ``"off"``, ``"cached"`` (the default) or ``"measure"``.

    Examples
    --------
    >>> autotune_mode() in MODES
    True
    """
    raw = os.environ.get("CONVKIT_AUTOTUNE")
    value = (raw or "cached").strip().lower() or "cached"
    if value not in MODES:
        raise SpecError(f"CONVKIT_AUTOTUNE must be one of {', '.join(MODES)}, got {raw!r}; e.g. "
                        f"CONVKIT_AUTOTUNE=cached (use tuned winners; the default) or unset it")
    return value


def cache_dir() -> Path:
    """``CONVKIT_CACHE_DIR``, else the user cache dir of convkit (platformdirs)."""
    env = os.environ.get("CONVKIT_CACHE_DIR", "").strip()
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("convkit", appauthor=False))


def cache_path() -> Path:
    """The tuning cache file."""
    return cache_dir() / FILENAME


def signature() -> dict:
    """What tuned results depend on besides the problem: CPU model and flags, convkit and backend versions.

    Examples
    --------
    >>> sorted(signature())
    ['arch', 'backends', 'convkit', 'cpu', 'flags']
    """
    import convkit
    # The CPU facts the benchmark report records, from the one place that reads them.
    from .bench.machine import FLAGS, _cpuinfo

    model, flags = _cpuinfo()
    return {"cpu": model, "arch": platform.machine(), "flags": [f for f in FLAGS if f in flags],
            "convkit": convkit.__version__,
            "backends": {name: str(b.version) for name, b in sorted(registry.all_backends().items())}}


def _signature_key(sig: dict) -> str:
    return hashlib.sha256(json.dumps(sig, sort_keys=True).encode()).hexdigest()[:16]


#: What a max pool's forward that also returns the argmax indices (as ``max_pool_grad`` runs it) is tuned
#: as: a kernel name plus this. Writing the indices is other work than the values alone, and a backend
#: can be the faster at one and the slower at the other.
INDICES = "+indices"


def tune_key(kernel: str, with_indices: bool = False) -> str:
    """The name a kernel call is tuned and looked up under.

    Examples
    --------
    >>> tune_key("pool_forward", with_indices=True), tune_key("conv_forward")
    ('pool_forward+indices', 'conv_forward')
    """
    return kernel + INDICES if with_indices else kernel


def split_key(key: str) -> tuple:
    """``(kernel, with_indices)`` of a :func:`tune_key`.

    Examples
    --------
    >>> split_key("pool_forward+indices")
    ('pool_forward', True)
    """
    return (key[: -len(INDICES)], True) if key.endswith(INDICES) else (key, False)


def entry_key(kernel: str, descriptor: str, threads: int) -> str:
    """The key of an entry in the file.

    Examples
    --------
    >>> entry_key("conv_forward", "conv1d_n1_c1_o1_i8_k3", 2)
    'conv_forward conv1d_n1_c1_o1_i8_k3 t2'
    """
    return f"{kernel} {descriptor} t{threads}"


def label(choice: str) -> str:
    """How a ``backend/algorithm`` choice is shown: a backend's only, ``default``, algorithm is left out.

    Examples
    --------
    >>> label("c/winograd"), label("cython/default")
    ('c/winograd', 'cython')
    """
    return choice[:-len("/default")] if choice.endswith("/default") else choice


class Entry:
    """A tuned winner: ``choice`` (``"backend/algorithm"``) and every candidate's median, fastest first.

    ``decision`` is dispatch's: ``(registry generation, its choice)``.
    """

    __slots__ = ("kernel", "descriptor", "threads", "choice", "times", "measured", "how", "decision")

    def __init__(self, kernel, descriptor, threads, choice, times, measured=None, how="tune"):
        self.kernel, self.descriptor, self.threads, self.choice = kernel, descriptor, int(threads), choice
        self.times = dict(sorted(times.items(), key=lambda kv: kv[1]))
        self.measured, self.how, self.decision = measured, how, None

    @property
    def summary(self) -> str:
        """``c/winograd 0.61 ms, cython 0.92 ms, ...`` (what ``CONVKIT_VERBOSE=1`` prints)."""
        from .bench.render import format_time

        return ", ".join(f"{label(c)} {format_time(t)}" for c, t in self.times.items())

    def to_json(self) -> dict:
        return {"choice": self.choice, "times_s": self.times, "measured": self.measured, "how": self.how}

    def __repr__(self) -> str:
        return f"<tuned {self.kernel} {self.descriptor} t{self.threads}: {self.summary}>"


def _read(path: Path) -> dict:
    """The file's content; an empty cache when it is missing or unreadable (a warning says why)."""
    try:
        data = json.loads(path.read_text())
        if data.get("schema") != SCHEMA or not isinstance(data.get("signatures"), dict):
            raise ValueError(f"not a {SCHEMA} file")
        return data
    except FileNotFoundError:
        pass
    except (OSError, ValueError, AttributeError) as exc:
        logger.warning("tuning cache %s ignored (%s: %s); `convkit tune --clear` removes it",
                       path, type(exc).__name__, exc)
    return {"schema": SCHEMA, "signatures": {}}


def _entries_of(data: dict, sig: dict) -> dict:
    """``{(kernel, canonical spec, threads): Entry}`` of the group of ``sig``."""
    from .spec import parse_descriptor

    group = data["signatures"].get(_signature_key(sig), {})
    out = {}
    for key, raw in group.get("entries", {}).items():
        try:
            kernel, descriptor, threads = key.split(" ")
            spec = parse_descriptor(descriptor)
            entry = Entry(kernel, descriptor, int(threads.lstrip("t")), raw["choice"], raw["times_s"],
                          raw.get("measured"), raw.get("how", "tune"))
        except Exception as exc:  # one bad entry (hand-edited) must not hide the others
            logger.warning("tuning cache entry %r ignored: %s: %s", key, type(exc).__name__, exc)
            continue
        out[(kernel, spec, entry.threads)] = entry
    return out


class _State:
    def __init__(self):
        self.lock = threading.Lock()
        self.checked = -1e9  # monotonic time of the last look at the file
        self.loaded = None  # (path, (mtime_ns, size) or None, registry generation) of `table`
        self.table: dict = {}


_state = _State()


def _stamp(path: Path):
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


def _refresh(now: float) -> None:
    with _state.lock:
        _state.checked = now
        path = cache_path()
        current = (path, _stamp(path), registry.generation())
        if current == _state.loaded:
            return
        _state.table = {} if current[1] is None else _entries_of(_read(path), signature())
        _state.loaded = current


def lookup(kernel: str, spec, threads: int):
    """The tuned :class:`Entry` of ``kernel`` on canonical ``spec`` at ``threads``, or ``None`` (dispatch's hot path)."""
    now = time.monotonic()
    if now - _state.checked > CHECK_EVERY_S or _state.loaded is None or _state.loaded[2] != registry.generation():
        _refresh(now)
    table = _state.table
    return table.get((kernel, spec, threads)) if table else None  # nothing tuned: not even a hash


def remember(entry: Entry, spec) -> None:
    """Use ``entry`` in this process without the file (the cache dir could not be written)."""
    with _state.lock:
        _state.table[(entry.kernel, spec, entry.threads)] = entry


def reset() -> None:
    """Forget what was loaded: the next :func:`lookup` reads the file (and the environment) again."""
    with _state.lock:
        _state.loaded, _state.checked, _state.table = None, -1e9, {}


@contextlib.contextmanager
def _locked(path: Path):
    """Hold an exclusive lock on ``path`` (created if missing) for the block."""
    with open(path, "a+b") as f:
        if fcntl is not None:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        elif msvcrt is not None:  # pragma: no cover
            f.seek(0)
            msvcrt.locking(f.fileno(), msvcrt.LK_LOCK, 1)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)
            elif msvcrt is not None:  # pragma: no cover
                f.seek(0)
                msvcrt.locking(f.fileno(), msvcrt.LK_UNLCK, 1)


def _write_atomically(path: Path, data: dict) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tuning-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def now_utc() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def store(entries) -> Path:
    """Merge ``entries`` (:class:`Entry` objects) into the file under the current signature; returns its path.

    Raises ``OSError`` when the cache dir cannot be written.
    """
    path = cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    sig = signature()
    with _locked(path.with_name(FILENAME + ".lock")):
        data = _read(path)
        group = data["signatures"].setdefault(_signature_key(sig), {"signature": sig, "entries": {}})
        for e in entries:
            group["entries"][entry_key(e.kernel, e.descriptor, e.threads)] = e.to_json()
        group["updated"] = now_utc()
        keep = sorted(data["signatures"], key=lambda k: data["signatures"][k].get("updated", ""))[-MAX_SIGNATURES:]
        data["signatures"] = {k: v for k, v in data["signatures"].items() if k in keep}
        _write_atomically(path, data)
    reset()
    return path


def read_all() -> dict:
    """``{"path", "signature", "entries": [Entry, ...], "other_signatures": {key: number of entries}}``.

    What ``convkit tune --show`` prints: the entries dispatch uses, and how
    many were measured under other signatures (ignored here).
    """
    path, sig = cache_path(), signature()
    data = _read(path)
    mine = _signature_key(sig)
    return {"path": path, "signature": sig, "entries": list(_entries_of(data, sig).values()),
            "other_signatures": {k: len(v.get("entries", {})) for k, v in data["signatures"].items() if k != mine}}


def clear() -> Path:
    """Remove the tuning cache (every signature's entries); returns the path it had."""
    path = cache_path()
    if path.parent.is_dir():
        with _locked(path.with_name(FILENAME + ".lock")):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    reset()
    return path
