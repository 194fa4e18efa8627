"""Container images for the real-node dev cluster, made on this machine.

No registry can be pulled from here, so the node's images are built locally
and imported into its containerd:

- the pod sandbox (``pause``): ``hack/node/pause.c``, compiled statically;
- ``busybox`` for test workloads and update Jobs: Debian's ``busybox-static``
  with a link per applet;
- the operator image, built from the project's ``Dockerfile`` by buildah on a
  Debian base made with debootstrap (``operator_image``);
- PostgreSQL from Debian's ``postgresql`` packages, for the tests of a real database
  (``postgres_image``), made with debootstrap the same way.

The first two are packed with umoci into OCI archives, cached by recipe and
Debian package version; the operator image is cached by a hash of what goes
into it, so a change to the operator's code builds a new one.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from patchwarden_dev.devcluster.cluster import DevClusterError

RECIPE = 1
"""Bump when the way the images are made changes (the cache is keyed by it)."""

REGISTRY = "patchwarden.test"
"""A name no registry answers to: a missing image fails at once instead of pulling."""

PAUSE_IMAGE = f"{REGISTRY}/pause:local"
BUSYBOX = f"{REGISTRY}/busybox"
OPERATOR = f"{REGISTRY}/patchwarden"
BASE = f"{REGISTRY}/debian-python"
POSTGRES = f"{REGISTRY}/postgres"
POSTGRES_MAJOR = "15"
"""Debian bookworm's PostgreSQL."""
POSTGRES_BIN = f"/usr/lib/postgresql/{POSTGRES_MAJOR}/bin"
DEBIAN_SUITE = "bookworm"
HOST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
BLOB_INFO_CACHE = Path("/var/lib/containers/cache/blob-info-cache-v1.boltdb")
"""Where buildah's image library (containers/image) keeps its blob-info cache when run
as root, whatever ``--root`` says: buildah 1.28 has no flag to move it."""
BLOB_INFO_PATHS = (BLOB_INFO_CACHE, BLOB_INFO_CACHE.parent, BLOB_INFO_CACHE.parent.parent)
"""The cache, then the directories it makes (cache/, containers/): removed in that order."""


@dataclass(frozen=True)
class Image:
    """An image archive on disk and the name it is imported under."""

    name: str  # repository:tag
    archive: Path
    self_named: bool = False
    """A docker archive that carries its full name (buildah's push); an OCI archive from
    umoci carries only its tag, and is imported with its repository as base name."""


def run(*args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise DevClusterError(
            f"{' '.join(str(a) for a in args[:4])} … failed ({proc.returncode}):\n"
            f"{(proc.stderr or proc.stdout)[-3000:]}"
        )
    return proc.stdout


def package_version(package: str) -> str:
    """The installed version of a Debian package (``hack/node/deps.sh`` installs them)."""
    proc = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0 or not proc.stdout:
        raise DevClusterError(f"Debian package {package} is not installed: run hack/node/deps.sh")
    return proc.stdout


def _atomic(target: Path, make: Callable[[Path], Path]) -> Path:
    """Build ``target`` through a temporary file next to it; a half-built one never counts."""
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".build-") as tmp:
        built: Path = make(Path(tmp))
        os.replace(built, target)
    return target


def _umoci_image(
    work: Path,
    tag: str,
    files: Iterable[tuple[Path, str]],
    links: dict[str, str],
    config: list[str],
) -> Path:
    """An OCI archive holding ``files`` (source, path in the image) and symlinks."""
    layout, bundle = work / "layout", work / "bundle"
    run("umoci", "init", "--layout", layout)
    run("umoci", "new", "--image", f"{layout}:{tag}")
    run("umoci", "unpack", "--image", f"{layout}:{tag}", bundle)
    rootfs = bundle / "rootfs"
    for source, inside in files:
        dest = rootfs / inside.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, dest)
    for inside, points_to in links.items():
        dest = rootfs / inside.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not dest.exists():
            dest.symlink_to(points_to)
    (rootfs / "tmp").mkdir(mode=0o1777, exist_ok=True)
    (rootfs / "tmp").chmod(0o1777)
    run("umoci", "repack", "--image", f"{layout}:{tag}", bundle)
    run("umoci", "config", "--image", f"{layout}:{tag}", *config)
    run("umoci", "gc", "--layout", layout)
    archive = work / "image.tar"
    run("tar", "-cf", archive, "-C", layout, ".")
    return archive


def pause_image(cache: Path, repo: Path) -> Image:
    source = repo / "hack" / "node" / "pause.c"
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:12]

    def make(work: Path) -> Path:
        binary = work / "pause"
        run("cc", "-static", "-O2", "-s", "-o", binary, source)
        return _umoci_image(
            work, "local", [(binary, "/pause")], {}, ["--config.entrypoint", "/pause"]
        )

    return Image(PAUSE_IMAGE, _atomic(cache / f"pause-{digest}-r{RECIPE}.tar", make))


def busybox_name() -> str:
    """The busybox image's name on the node, tagged with Debian's upstream version."""
    version = package_version("busybox-static")
    return f"{BUSYBOX}:{version.split(':')[-1].split('-')[0]}"  # 1:1.35.0-4+deb12u1 -> 1.35.0


def busybox_image(cache: Path) -> Image:
    version = package_version("busybox-static")
    name = busybox_name()
    tag = name.rsplit(":", 1)[1]

    def make(work: Path) -> Path:
        binary = Path("/bin/busybox")
        applets = run(binary, "--list-full").split()
        links = {f"/{applet}": "/bin/busybox" for applet in applets if applet != "bin/busybox"}
        return _umoci_image(work, tag, [(binary, "/bin/busybox")], links, ["--config.cmd", "sh"])

    safe = version.replace(":", "_").replace("+", "_")
    return Image(name, _atomic(cache / f"busybox-{safe}-r{RECIPE}.tar", make))


def source_hash(repo: Path) -> str:
    """What the operator image is built from: the Dockerfile, pyproject.toml and
    every file of the package (not bytecode)."""
    h = hashlib.sha256()
    files = [repo / "Dockerfile", repo / "pyproject.toml", repo / "README.md"]
    files += sorted(
        p
        for p in (repo / "operator").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and not p.name.endswith(".pyc")
    )
    for path in files:
        h.update(str(path.relative_to(repo)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


@contextlib.contextmanager
def no_new_machine_paths(paths: Iterable[Path]) -> Iterator[None]:
    """Remove afterwards those of ``paths`` (files, then emptied directories, in the
    order given) that did not exist before: a tool's traces outside our directories."""
    made = [p for p in paths if not os.path.lexists(p)]
    try:
        yield
    finally:
        for path in made:
            if path.is_dir() and not path.is_symlink():
                with contextlib.suppress(OSError):  # not empty: something else is there
                    path.rmdir()
            else:
                path.unlink(missing_ok=True)


def buildah(storage: Path, *args: str | Path) -> str:
    """buildah on our own store; its blob-info cache, which it writes to the machine's
    ``/var/lib/containers`` whatever the store, is removed when it was not there."""
    with no_new_machine_paths(BLOB_INFO_PATHS):
        return run(
            "buildah",
            "--root",
            storage / "root",
            "--runroot",
            storage / "runroot",
            "--storage-driver",
            "overlay",
            *args,
        )


def base_image(cache: Path, storage: Path) -> str:
    """A Debian base with Python 3.11 (the registry's python image cannot be pulled
    here), made with debootstrap once and kept in buildah's store under ``BASE``."""
    tag = f"{DEBIAN_SUITE}-r{RECIPE}"
    name = f"{BASE}:{tag}"
    stamp = storage / f".base-{tag}"
    if stamp.exists():
        return name
    with tempfile.TemporaryDirectory(dir=cache, prefix=".debootstrap-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        run(
            "debootstrap",
            "--variant=minbase",
            "--include=python3,python3-venv,python-is-python3,ca-certificates",
            DEBIAN_SUITE,
            rootfs,
        )
        shutil.rmtree(rootfs / "var" / "cache" / "apt" / "archives", ignore_errors=True)
        container = buildah(storage, "from", "scratch").strip()
        try:
            mount = Path(buildah(storage, "mount", container).strip())
            run("cp", "-a", f"{rootfs}/.", mount)
            buildah(storage, "umount", container)
            buildah(storage, "config", "--cmd", "python3", container)
            buildah(storage, "commit", "--rm", container, name)
        except DevClusterError:
            with contextlib.suppress(DevClusterError):  # the working container of our store
                buildah(storage, "rm", container)
            raise
    stamp.touch()
    return name


def operator_image(cache: Path, repo: Path) -> Image:
    """The operator image from the project's Dockerfile, on the local Debian base."""
    storage = cache / "buildah"
    tag = source_hash(repo)
    name = f"{OPERATOR}:{tag}"

    def make(work: Path) -> Path:
        base = base_image(cache, storage)
        buildah(
            storage,
            "bud",
            "--pull-never",
            "--isolation",
            "chroot",
            "--build-arg",
            f"BASE={base}",
            "--layers=false",
            # The build host's trust store (a proxy's CA, where there is one) for pip,
            # mounted while RUN steps run, not copied into the image.
            "--volume",
            f"{HOST_CA_BUNDLE}:/etc/ssl/certs/ca-certificates.crt:ro",
            "-t",
            name,
            "-f",
            repo / "Dockerfile",
            repo,
        )
        archive = work / "image.tar"
        buildah(storage, "push", name, f"docker-archive:{archive}:{name}")
        buildah(storage, "rmi", name)
        return archive

    archive = _atomic(cache / "operator" / f"patchwarden-{tag}.tar", make)
    for older in archive.parent.glob("patchwarden-*.tar"):  # ~430 MB each: keep one
        if older != archive:
            older.unlink(missing_ok=True)
    return Image(name, archive, self_named=True)


def postgres_image(cache: Path) -> Image:
    """PostgreSQL (Debian bookworm's, with psql, pg_amcheck and the amcheck extension) on a
    minimal Debian made with debootstrap, for the tests of a real database. It runs as
    user 1000 (``app``, in its passwd: initdb refuses a user it cannot name), with the
    server's binaries on its PATH; cached by suite and recipe."""
    storage = cache / "buildah"
    name = f"{POSTGRES}:{POSTGRES_MAJOR}-{DEBIAN_SUITE}-r{RECIPE}"

    def make(work: Path) -> Path:
        rootfs = work / "rootfs"
        # No service starts in the chroot: invoke-rc.d asks policy-rc.d first.
        policy = rootfs / "usr" / "sbin" / "policy-rc.d"
        policy.parent.mkdir(parents=True)
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        run(
            "debootstrap",
            "--variant=minbase",
            f"--include=postgresql-{POSTGRES_MAJOR},postgresql-client-{POSTGRES_MAJOR}",
            DEBIAN_SUITE,
            rootfs,
        )
        policy.unlink(missing_ok=True)
        shutil.rmtree(rootfs / "var" / "cache" / "apt" / "archives", ignore_errors=True)
        shutil.rmtree(rootfs / "var" / "lib" / "postgresql", ignore_errors=True)  # its cluster
        with (rootfs / "etc" / "passwd").open("a") as passwd:
            passwd.write("app:x:1000:1000:app:/tmp:/bin/sh\n")
        with (rootfs / "etc" / "group").open("a") as group:
            group.write("app:x:1000:\n")
        container = buildah(storage, "from", "scratch").strip()
        try:
            mount = Path(buildah(storage, "mount", container).strip())
            run("cp", "-a", f"{rootfs}/.", mount)
            buildah(storage, "umount", container)
            path = f"{POSTGRES_BIN}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
            buildah(storage, "config", "--env", f"PATH={path}", "--user", "1000:1000", container)
            buildah(storage, "config", "--cmd", "postgres", container)
            buildah(storage, "commit", "--rm", container, name)
        except DevClusterError:
            with contextlib.suppress(DevClusterError):
                buildah(storage, "rm", container)
            raise
        archive = work / "image.tar"
        buildah(storage, "push", name, f"docker-archive:{archive}:{name}")
        buildah(storage, "rmi", name)
        return archive

    archive = _atomic(cache / f"postgres-{POSTGRES_MAJOR}-{DEBIAN_SUITE}-r{RECIPE}.tar", make)
    return Image(name, archive, self_named=True)
