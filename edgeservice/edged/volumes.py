"""ConfigMaps, Secrets and volumes on the edge: from a pod's references to values and files.

Edged reads ConfigMaps and Secrets through a ``ConfigSource`` (the edge service implements it over its
cache, which the cloud fills with every ConfigMap/Secret of the namespaces of this node's pods), and
calls ``Edged.config_changed`` when one changes. This module holds what Edged does with them:

- ``resolve_env``: the variables of ``envFrom`` and of ``configMapKeyRef``/``secretKeyRef``, or a
  ``ConfigMissing`` naming the object or key, in the kubelet's words (``configmap "x" not found``), which
  Edged reports as ``CreateContainerConfigError`` until the object arrives. Keys of ``envFrom`` that are
  not valid variable names are skipped (and logged), as the kubelet does.
- ``materialize``: one volume's directory under ``root/pods/<uid>/volumes/<name>/``. An emptyDir is a
  plain directory (0777, as the kubelet makes it); a hostPath is the host path itself, checked against its
  ``type`` (``DirectoryOrCreate`` and ``FileOrCreate`` create it); a configMap/secret volume is written
  like the kubelet's AtomicWriter: the files live in a timestamped ``..<ns>`` directory, ``..data`` is a
  symlink to it, and each top-level name is a symlink through ``..data``. An update writes a new
  timestamped directory and renames a new symlink over ``..data``, so a reader sees the old set of files
  or the new one, never a mix; an unchanged object rewrites nothing. Secret volumes are 0700.

Values of Secrets never reach a log line: messages name objects and keys only.

Deliberately not done: ``emptyDir.medium: Memory`` is disk-backed (no tmpfs), ``sizeLimit`` is not
enforced, subPath mounts of configMap/secret volumes are not updated (as in Kubernetes), and the kubelet's
periodic resync is replaced by ``config_changed`` events plus a retry of failed volumes.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import os
import re
import shutil
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from app.model import (
    ConfigKind,
    ConfigVolumeSource,
    Container,
    EmptyDirSource,
    HostPathSource,
    Volume,
)
from edgeservice.errors import ContainerRuntimeError

log = logging.getLogger(__name__)

JSONObject = dict[str, Any]
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
# The kubelet makes emptyDir directories world-writable so that any user in the pod can use them.
_EMPTY_DIR_MODE = 0o777
_CONFIG_DIR_MODE = 0o755
_SECRET_DIR_MODE = 0o700
_DATA_LINK = "..data"
_DATA_TMP = "..data_tmp"


class ConfigSource(Protocol):
    """Where Edged reads the ConfigMaps and Secrets of its pods' namespaces (the edge cache)."""

    def configmap(self, namespace: str, name: str) -> JSONObject | None: ...

    def secret(self, namespace: str, name: str) -> JSONObject | None: ...


class ConfigMissing(ContainerRuntimeError):
    """A non-optional ConfigMap/Secret (or one of its keys) a container needs is not on this node."""

    def __init__(self, message: str, *, kind: ConfigKind, name: str, key: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.name = name
        self.key = key


class VolumeError(ContainerRuntimeError):
    """A volume could not be prepared (missing object, failed hostPath type check, I/O error)."""

    def __init__(self, message: str, *, volume: str) -> None:
        super().__init__(message)
        self.volume = volume


def _lookup(source: ConfigSource | None, kind: ConfigKind, namespace: str, name: str) -> JSONObject | None:
    if source is None:
        return None
    obj = source.configmap(namespace, name) if kind == "ConfigMap" else source.secret(namespace, name)
    return obj if isinstance(obj, dict) else None


def _not_found(kind: ConfigKind, name: str) -> str:
    return f'{kind.lower()} "{name}" not found'


def object_data(kind: ConfigKind, obj: JSONObject) -> dict[str, bytes]:
    """Every key of a ConfigMap (``data`` and ``binaryData``) or Secret (``data``), as bytes.

    A value that is not valid base64 (the cloud validates, so only a corrupt cache has one) is skipped
    and logged by key only."""
    out: dict[str, bytes] = {}
    name = str(obj.get("metadata", {}).get("name", ""))
    data = obj.get("data")
    if isinstance(data, dict):
        for key, value in data.items():
            if not isinstance(value, str):
                continue
            if kind == "ConfigMap":
                out[str(key)] = value.encode()
                continue
            try:
                out[str(key)] = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                log.warning("secret %s: key %s is not valid base64; skipped", name, key)
    binary = obj.get("binaryData") if kind == "ConfigMap" else None
    if isinstance(binary, dict):
        for key, value in binary.items():
            try:
                out[str(key)] = base64.b64decode(str(value), validate=True)
            except (binascii.Error, ValueError):
                log.warning("configmap %s: binaryData key %s is not valid base64; skipped", name, key)
    return out


def _text(value: bytes) -> str:
    # Environment variables are text; undecodable bytes are replaced rather than failing the start.
    return value.decode("utf-8", errors="replace")


@dataclass(frozen=True, slots=True)
class ResolvedEnv:
    """``env_from``: the envFrom variables in order (prefixed); ``values``: each env var from a key ref."""

    env_from: dict[str, str]
    values: dict[str, str]


def resolve_env(container: Container, namespace: str, source: ConfigSource | None) -> ResolvedEnv:
    """Resolve a container's ConfigMap/Secret variables; raises ``ConfigMissing`` naming what is missing."""
    cache: dict[tuple[ConfigKind, str], dict[str, bytes] | None] = {}

    def data_of(kind: ConfigKind, name: str) -> dict[str, bytes] | None:
        if (kind, name) not in cache:
            obj = _lookup(source, kind, namespace, name)
            cache[kind, name] = object_data(kind, obj) if obj is not None else None
        return cache[kind, name]

    env_from: dict[str, str] = {}
    for ef in container.env_from:
        data = data_of(ef.kind, ef.name)
        if data is None:
            if ef.optional:
                continue
            raise ConfigMissing(_not_found(ef.kind, ef.name), kind=ef.kind, name=ef.name)
        for key in sorted(data):
            name = ef.prefix + key
            if not _ENV_NAME.match(name):
                log.warning(
                    "container %s: skipping %s %s key %r: %r is not a valid environment variable name",
                    container.name,
                    ef.kind,
                    ef.name,
                    key,
                    name,
                )
                continue
            env_from[name] = _text(data[key])
    values: dict[str, str] = {}
    for var in container.env:
        ref = var.config_ref
        if ref is None:
            continue
        data = data_of(ref.kind, ref.name)
        if data is None:
            if ref.optional:
                continue
            raise ConfigMissing(_not_found(ref.kind, ref.name), kind=ref.kind, name=ref.name)
        if ref.key not in data:
            if ref.optional:
                continue
            raise ConfigMissing(
                f"couldn't find key {ref.key} in {ref.kind} {namespace}/{ref.name}",
                kind=ref.kind,
                name=ref.name,
                key=ref.key,
            )
        values[var.name] = _text(data[ref.key])
    return ResolvedEnv(env_from, values)


# -- volumes -----------------------------------------------------------------------------------------------


def volume_dir(pod_dir: Path, name: str) -> Path:
    return pod_dir / "volumes" / name


def materialize(pod_dir: Path, namespace: str, volume: Volume, source: ConfigSource | None) -> Path:
    """Prepare one volume and return the host path that backs it; raises ``VolumeError``."""
    src = volume.source
    try:
        if isinstance(src, EmptyDirSource):
            path = volume_dir(pod_dir, volume.name)
            if not path.is_dir():
                path.mkdir(parents=True, exist_ok=True)
                path.chmod(_EMPTY_DIR_MODE)
            return path
        if isinstance(src, HostPathSource):
            return check_host_path(src.path, src.type)
        return _materialize_config(pod_dir, namespace, volume.name, src, source)
    except VolumeError as exc:
        if exc.volume:
            raise
        raise VolumeError(exc.message, volume=volume.name) from exc
    except OSError as exc:
        raise VolumeError(f"{exc.strerror or exc}", volume=volume.name) from exc


def check_host_path(path: str, typ: str) -> Path:
    """The kubelet's hostPath type check (creating for the ``...OrCreate`` types); raises ``VolumeError``."""
    p = Path(path)

    def fail(what: str) -> VolumeError:
        return VolumeError(f"hostPath type check failed: {path} is not {what}", volume="")

    if typ == "DirectoryOrCreate":
        p.mkdir(mode=0o755, parents=True, exist_ok=True)
        if not p.is_dir():
            raise fail("a directory")
    elif typ == "FileOrCreate":
        if not p.exists():
            if not p.parent.is_dir():
                raise VolumeError(
                    f"hostPath type check failed: the parent directory of {path} does not exist", volume=""
                )
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
            os.close(fd)
        if not p.is_file():
            raise fail("a file")
    elif typ:
        try:
            mode = p.stat().st_mode
        except FileNotFoundError as exc:
            raise VolumeError(f"hostPath type check failed: {path} does not exist", volume="") from exc
        expected = {
            "Directory": (stat.S_ISDIR, "a directory"),
            "File": (stat.S_ISREG, "a file"),
            "Socket": (stat.S_ISSOCK, "a socket file"),
            "CharDevice": (stat.S_ISCHR, "a character device"),
            "BlockDevice": (stat.S_ISBLK, "a block device"),
        }[typ]
        if not expected[0](mode):
            raise fail(expected[1])
    return p


def _materialize_config(
    pod_dir: Path, namespace: str, name: str, src: ConfigVolumeSource, source: ConfigSource | None
) -> Path:
    obj = _lookup(source, src.kind, namespace, src.name)
    files: dict[str, tuple[bytes, int]] = {}
    if obj is None:
        if not src.optional:
            raise VolumeError(_not_found(src.kind, src.name), volume=name)
    else:
        data = object_data(src.kind, obj)
        if src.items:
            for item in src.items:
                if item.key not in data:
                    if src.optional:
                        continue
                    raise VolumeError(
                        f"{src.kind.lower()} {src.name!r} references non-existent config key: {item.key}",
                        volume=name,
                    )
                files[item.path] = (data[item.key], src.default_mode if item.mode is None else item.mode)
        else:
            files = {key: (value, src.default_mode) for key, value in data.items()}
    path = volume_dir(pod_dir, name)
    mode = _SECRET_DIR_MODE if src.kind == "Secret" else _CONFIG_DIR_MODE
    if write_projection(path, files, dir_mode=mode):
        log.info("volume %s updated from %s %s/%s", name, src.kind, namespace, src.name)
    return path


def _read_projection(directory: Path) -> dict[str, tuple[bytes, int]] | None:
    files: dict[str, tuple[bytes, int]] = {}
    for root, _dirs, names in os.walk(directory):
        for n in names:
            full = Path(root) / n
            try:
                files[str(full.relative_to(directory))] = (
                    full.read_bytes(),
                    stat.S_IMODE(full.stat().st_mode),
                )
            except OSError:
                return None
    return files


def write_projection(directory: Path, files: Mapping[str, tuple[bytes, int]], *, dir_mode: int) -> bool:
    """Make ``directory`` show exactly ``files`` ({relative path: (content, mode)}), atomically, the way
    the kubelet's AtomicWriter does; returns False when it already did (nothing is rewritten)."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(dir_mode)
    data_link = directory / _DATA_LINK
    old: Path | None = None
    if data_link.is_symlink():
        old = directory / data_link.readlink()
        if _read_projection(old) == dict(files):
            return False
    # A timestamped name (nanoseconds, as the kubelet's ..2006_01_02_15_04_05.nnnnnnnnn) never repeats.
    fresh = directory / f"..{time.time_ns()}"
    fresh.mkdir(mode=dir_mode)
    fresh.chmod(dir_mode)
    for rel, (content, mode) in files.items():
        target = fresh / rel
        if target.parent != fresh:
            target.parent.mkdir(mode=dir_mode, parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(content)
            os.fchmod(f.fileno(), mode)
    tmp = directory / _DATA_TMP
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    tmp.symlink_to(fresh.name)
    tmp.replace(data_link)  # rename(2): readers see the old or the new ..data, never neither
    wanted = {rel.split("/", 1)[0] for rel in files}
    for top in wanted:
        link = directory / top
        if link.is_symlink() and str(link.readlink()) == f"{_DATA_LINK}/{top}":
            continue
        if link.is_dir() and not link.is_symlink():
            shutil.rmtree(link)
        else:
            with contextlib.suppress(FileNotFoundError):
                link.unlink()
        link.symlink_to(f"{_DATA_LINK}/{top}")
    for entry in directory.iterdir():
        if entry.name.startswith(".."):
            if entry.name not in (_DATA_LINK, fresh.name) and entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)  # the old generation, and leftovers of a crash
            continue
        if entry.name not in wanted:
            entry.unlink()
    return True


def subpath_source(base: Path, sub_path: str, *, create: bool) -> Path:
    """The host path of ``subPath`` inside a volume; created as a directory when ``create`` (emptyDir and
    hostPath volumes, as the kubelet does). Raises ``VolumeError`` when it escapes the volume or is absent."""
    target = base / sub_path
    resolved = target.resolve()
    if not (resolved == base.resolve() or resolved.is_relative_to(base.resolve())):
        raise VolumeError(f"subPath {sub_path!r} escapes its volume", volume="")
    if not target.exists():
        if not create:
            raise VolumeError(f"subPath {sub_path!r} does not exist in the volume", volume="")
        target.mkdir(mode=0o755, parents=True, exist_ok=True)
    return target
