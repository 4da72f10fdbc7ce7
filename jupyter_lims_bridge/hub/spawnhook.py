"""``LimsSpawnHook``: which LIMS data a user's server mounts, asked of the LIMS at spawn time.

``c.Spawner.pre_spawn_hook = LimsSpawnHook(config=c)`` (options in
``c.LimsSpawnHook.*``) or ``LimsSpawnHook(mounts_url=…, service_token=…)``.
At each spawn it GETs ``mounts_url`` for the user (bearer ``service_token``,
timeout, bounded retries with backoff), checks the whole answer, and only then
applies it - to *that spawner instance*, never to class-wide configuration (a
hook that mutated class-level ``volumes`` once leaked one user's volumes into
everyone's pods, z2jh #1331). Every list or dict it changes is a new object.

- KubeSpawner: ``volumes``/``volume_mounts`` (names ``lims-<name>``, DNS-safe and
  unique), ``uid``, ``gid``, ``fs_gid``, ``supplemental_gids``;
- DockerSpawner: ``volumes``/``read_only_volumes`` (host paths; NFS and PVC
  stores cannot be bind-mounted and are skipped with a warning),
  ``NB_UID``/``NB_GID`` and ``group_add``;
- any other spawner runs the server as a process on a host: only ``hostPath``
  stores, name -> that host path;
- every spawner: ``environment["LIMS_BRIDGE_DATA_MOUNTS"]`` (JSON name -> path
  in the server; what ``LimsBridge.data_mounts`` reads), so the extension links them.

It must not import jupyter_server, kubespawner or dockerspawner (it recognises
a spawner by the class it already is), and never logs the service token.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from traitlets import Enum, Float, Int, TraitError, Unicode, validate
from traitlets.config import LoggingConfigurable

ENV_NAME = "LIMS_BRIDGE_DATA_MOUNTS"
#: A mount name: one safe path component (it becomes a directory name and part of a volume name).
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
KINDS = ("nfs", "pvc", "hostPath")
MAX_MOUNTS = 64
MAX_ANSWER_BYTES = 1024 * 1024


class MountsRefused(Exception):
    """The LIMS could not be asked, or its answer is not acceptable. The message is
    safe to show to the user (no token, no LIMS response body)."""


class LimsSpawnError(RuntimeError):
    """Fails a spawn (``on_error = "fail"``). JupyterHub shows ``jupyterhub_message``
    to the user on its spawn pages (other exceptions' text only in the progress stream)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.jupyterhub_message = message


@dataclass(frozen=True)
class Mount:
    """One store from the LIMS's answer, checked."""

    name: str
    kind: str  # one of KINDS
    read_only: bool
    source: dict[str, str]  # nfs: server, path; pvc: claimName, subPath?; hostPath: path


@dataclass(frozen=True)
class MountsAnswer:
    mounts: tuple[Mount, ...]
    uid: int | None = None
    gid: int | None = None
    supplemental_gids: tuple[int, ...] = ()


# ---------------------------------------------------------------------------
# the LIMS's answer


def _absolute_path(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise MountsRefused(f"{where} must be an absolute path.")
    if "\x00" in value or any(part == ".." for part in value.split("/")):
        raise MountsRefused(f"{where} must not contain '..'.")
    return value


def _relative_path(value: Any, where: str) -> str:
    if not isinstance(value, str) or value.startswith("/") or "\x00" in value:
        raise MountsRefused(f"{where} must be a relative path.")
    if any(part in ("..", ".") for part in value.split("/")):
        raise MountsRefused(f"{where} must not contain '..'.")
    return value


def _id(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**31:
        raise MountsRefused(f"{where} must be a non-negative integer.")
    return value


def parse_answer(raw: Any) -> MountsAnswer:
    """Check the whole answer of ``mounts_url``; raise :class:`MountsRefused` on the first fault."""
    if not isinstance(raw, dict) or not isinstance(raw.get("mounts", []), list):
        raise MountsRefused("The LIMS's answer has no 'mounts' list.")
    items = raw.get("mounts", [])
    if len(items) > MAX_MOUNTS:
        raise MountsRefused(f"The LIMS named more than {MAX_MOUNTS} mounts.")
    mounts: list[Mount] = []
    for i, item in enumerate(items):
        where = f"mounts[{i}]"
        if not isinstance(item, dict):
            raise MountsRefused(f"{where} must be an object.")
        name = item.get("name")
        if not isinstance(name, str) or not _NAME_RE.match(name) or name in (".", ".."):
            raise MountsRefused(
                f"{where}.name must be one safe path component (letters, digits, . _ -)."
            )
        where = f"mount {name!r}"
        kinds = [k for k in KINDS if k in item]
        if len(kinds) != 1:
            raise MountsRefused(f"{where} must have exactly one of {', '.join(KINDS)}.")
        kind = kinds[0]
        read_only = item.get("readOnly", True)
        if not isinstance(read_only, bool):
            raise MountsRefused(f"{where}.readOnly must be true or false.")
        spec = item[kind]
        if kind == "hostPath":
            source = {"path": _absolute_path(spec, f"{where}.hostPath")}
        elif kind == "nfs":
            if (
                not isinstance(spec, dict)
                or not isinstance(spec.get("server"), str)
                or not spec["server"]
            ):
                raise MountsRefused(f"{where}.nfs needs a 'server'.")
            if not re.match(r"^[A-Za-z0-9.:\[\]-]+$", spec["server"]):
                raise MountsRefused(f"{where}.nfs.server must be a host name or address.")
            source = {
                "server": spec["server"],
                "path": _absolute_path(spec.get("path"), f"{where}.nfs.path"),
            }
        else:  # pvc
            if not isinstance(spec, dict) or not isinstance(spec.get("claimName"), str):
                raise MountsRefused(f"{where}.pvc needs a 'claimName'.")
            if not re.match(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$", spec["claimName"]):
                raise MountsRefused(f"{where}.pvc.claimName must be a Kubernetes object name.")
            source = {"claimName": spec["claimName"]}
            if spec.get("subPath") not in (None, ""):
                source["subPath"] = _relative_path(spec["subPath"], f"{where}.pvc.subPath")
        mounts.append(Mount(name=name, kind=kind, read_only=read_only, source=source))
    names = [m.name for m in mounts]
    if len(set(names)) != len(names):
        raise MountsRefused("The LIMS named two mounts alike.")
    uid = _id(raw["uid"], "uid") if raw.get("uid") is not None else None
    gid = _id(raw["gid"], "gid") if raw.get("gid") is not None else None
    groups = raw.get("supplementalGroups") or []
    if not isinstance(groups, list):
        raise MountsRefused("supplementalGroups must be a list of integers.")
    return MountsAnswer(
        mounts=tuple(mounts),
        uid=uid,
        gid=gid,
        supplemental_gids=tuple(_id(g, "supplementalGroups[]") for g in groups),
    )


# ---------------------------------------------------------------------------
# applying it to one spawner


def volume_name(name: str) -> str:
    """``lims-<name>``, a DNS-1123 label; a hash keeps names that slug alike apart."""
    slug = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-") or "x"
    if slug == name:
        return f"lims-{slug}"[:63]
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"lims-{slug[:48].strip('-')}-{digest}"


def _braces(text: str) -> str:
    # KubeSpawner and DockerSpawner expand {username}-style templates in these
    # strings with str.format: a literal brace from the LIMS must survive that
    return text.replace("{", "{{").replace("}", "}}")


def _is(spawner: Any, module: str, cls: str) -> bool:
    # only a spawner of that class can exist if its module was imported
    mod = sys.modules.get(module)
    return mod is not None and isinstance(spawner, getattr(mod, cls))


def spawner_kind(spawner: Any) -> str:
    if _is(spawner, "kubespawner", "KubeSpawner"):
        return "kubernetes"
    if _is(spawner, "dockerspawner", "DockerSpawner"):
        return "docker"
    return "process"


def _mounts_env(value: dict[str, str]) -> Any:
    text = json.dumps(value, sort_keys=True)
    # a callable: JupyterHub calls it for every spawner, and KubeSpawner does not
    # str.format its result (a JSON text would raise KeyError on its braces)
    return lambda spawner: text


def _existing_mounts(spawner: Any) -> dict[str, str]:
    """``LIMS_BRIDGE_DATA_MOUNTS`` the operator set already (e.g. a site-wide store)."""
    value = spawner.environment.get(ENV_NAME)
    if callable(value):
        value = value(spawner)
    if not isinstance(value, str):
        return {}
    for text in (value, value.replace("{{", "{").replace("}}", "}")):
        try:
            parsed = json.loads(text)
        except ValueError:
            continue
        if isinstance(parsed, dict):
            return {str(k): str(v) for k, v in parsed.items()}
    return {}


def apply_answer(spawner: Any, answer: MountsAnswer, mount_root: str, log: Any) -> dict[str, str]:
    """Set ``answer`` on this spawner instance; returns name -> path in the server."""
    kind = spawner_kind(spawner)
    root = "/" + mount_root.strip("/")
    paths: dict[str, str] = {}
    if kind == "kubernetes":
        volumes, mounts = [], []
        for m in answer.mounts:
            vname = volume_name(m.name)
            if m.kind == "nfs":
                source = {
                    "nfs": {
                        "server": m.source["server"],
                        "path": _braces(m.source["path"]),
                        "readOnly": m.read_only,
                    }
                }
            elif m.kind == "pvc":
                source = {
                    "persistentVolumeClaim": {
                        "claimName": m.source["claimName"],
                        "readOnly": m.read_only,
                    }
                }
            else:
                source = {"hostPath": {"path": _braces(m.source["path"]), "type": "Directory"}}
            volumes.append({"name": vname, **source})
            mount = {"name": vname, "mountPath": f"{root}/{m.name}", "readOnly": m.read_only}
            if m.source.get("subPath"):
                mount["subPath"] = _braces(m.source["subPath"])
            mounts.append(mount)
            paths[m.name] = f"{root}/{m.name}"
        # new objects on the instance: the class-wide (configured) value stays untouched
        spawner.volumes = _extend(spawner.volumes, volumes)
        spawner.volume_mounts = _extend(spawner.volume_mounts, mounts)
        if answer.uid is not None:
            spawner.uid = answer.uid
        if answer.gid is not None:
            spawner.gid = answer.gid
            spawner.fs_gid = answer.gid
        if answer.supplemental_gids:
            existing = (
                spawner.supplemental_gids if isinstance(spawner.supplemental_gids, list) else []
            )
            spawner.supplemental_gids = list(dict.fromkeys([*existing, *answer.supplemental_gids]))
    elif kind == "docker":
        volumes = dict(spawner.volumes)
        read_only = dict(spawner.read_only_volumes)
        for m in answer.mounts:
            if m.kind != "hostPath":
                log.warning(
                    "LimsSpawnHook: DockerSpawner cannot bind the %s store %r; skipped",
                    m.kind,
                    m.name,
                )
                continue
            target = f"{root}/{m.name}"
            if m.read_only:
                read_only[_braces(m.source["path"])] = target
            else:
                volumes[_braces(m.source["path"])] = {"bind": target, "mode": "rw"}
            paths[m.name] = target
        spawner.volumes = volumes
        spawner.read_only_volumes = read_only
        env = dict(spawner.environment)
        if answer.uid is not None:
            env["NB_UID"] = str(answer.uid)
        if answer.gid is not None:
            env["NB_GID"] = str(answer.gid)
        spawner.environment = env
        if answer.supplemental_gids:
            host_config = spawner.extra_host_config
            if isinstance(host_config, dict):
                groups = [*host_config.get("group_add", []), *map(str, answer.supplemental_gids)]
                spawner.extra_host_config = {
                    **host_config,
                    "group_add": list(dict.fromkeys(groups)),
                }
    else:
        for m in answer.mounts:
            if m.kind != "hostPath":
                log.warning(
                    "LimsSpawnHook: a local process cannot mount the %s store %r; skipped",
                    m.kind,
                    m.name,
                )
                continue
            paths[m.name] = m.source["path"]
    env = dict(spawner.environment)
    env[ENV_NAME] = _mounts_env({**_existing_mounts(spawner), **paths})
    spawner.environment = env
    return paths


def _extend(current: Any, new: list[dict[str, Any]]) -> Any:
    """``volumes``/``volume_mounts`` are lists or dicts (KubeSpawner 7): add to a copy."""
    if isinstance(current, Mapping):
        return {**current, **{item["name"]: item for item in new}}
    return [*(current or []), *new]


# ---------------------------------------------------------------------------
# the hook


class LimsSpawnHook(LoggingConfigurable):
    """A ``Spawner.pre_spawn_hook`` that mounts the user's LIMS stores."""

    mounts_url = Unicode(
        "",
        help="""URL the hook GETs for a user's mounts; ``{username}`` is replaced by the
        URL-escaped JupyterHub user name. Default: none (the hook does nothing).
        Example: ``"https://lims.example.org/api/jupyter/users/{username}/mounts"``.""",
    ).tag(config=True)

    @validate("mounts_url")
    def _validate_mounts_url(self, proposal: dict[str, Any]) -> str:
        value = proposal["value"]
        parts = urlsplit(value)
        if value and parts.scheme not in ("http", "https"):
            raise TraitError("mounts_url must be an http(s) URL")
        if parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "localhost", "::1"):
            # the service token would cross the network in clear text
            self.log.warning("LimsSpawnHook: mounts_url is plain http; use https outside loopback")
        return value

    service_token = Unicode(
        "",
        help="""Sent as ``Authorization: Bearer <service_token>``: the hub's credential at
        the LIMS. Default: none. Example: read it from a Kubernetes secret,
        ``os.environ["LIMS_SERVICE_TOKEN"]``.""",
    ).tag(config=True)

    timeout = Float(
        10.0,
        help="""Seconds one request to ``mounts_url`` may take. Default: 10.""",
    ).tag(config=True)

    retries = Int(
        2,
        help="""Further attempts after a failed request (network error, 5xx, 429), with
        exponential backoff (``backoff``, ×2 each). Default: 2 (three attempts).""",
    ).tag(config=True)

    backoff = Float(
        0.5,
        help="""Seconds before the first retry; each later one waits twice as long. Default: 0.5.""",
    ).tag(config=True)

    mount_root = Unicode(
        "/mnt/lims",
        help="""Directory in the container under which each store is mounted as
        ``<mount_root>/<name>``. Default: ``"/mnt/lims"``.""",
    ).tag(config=True)

    @validate("mount_root")
    def _validate_mount_root(self, proposal: dict[str, Any]) -> str:
        value = proposal["value"]
        try:
            _absolute_path(value, "mount_root")
        except MountsRefused as e:
            raise TraitError(str(e)) from None
        return value

    on_error = Enum(
        ["fail", "continue"],
        "fail",
        help="""When the LIMS cannot be asked or answers something unacceptable:
        ``"fail"`` fails the spawn with a message the user sees; ``"continue"``
        spawns without LIMS mounts and logs a warning. Default: ``"fail"``.""",
    ).tag(config=True)

    def __call__(self, spawner: Any) -> Any:
        return self.apply(spawner)

    async def apply(self, spawner: Any) -> dict[str, str]:
        """Ask the LIMS and apply its answer to ``spawner``; returns name -> server path."""
        if not self.mounts_url:
            return {}
        name = spawner.user.name
        try:
            answer = parse_answer(await self.fetch(name))
        except MountsRefused as e:
            if self.on_error == "continue":
                self.log.warning("LimsSpawnHook: no LIMS mounts for %s: %s", name, e)
                return {}
            self.log.error("LimsSpawnHook: spawn of %s refused: %s", name, e)
            raise LimsSpawnError(
                f"The LIMS data for your server could not be prepared: {e}"
            ) from None
        paths = apply_answer(spawner, answer, self.mount_root, self.log)
        self.log.info("LimsSpawnHook: %s gets LIMS mounts %s", name, sorted(paths))
        return paths

    async def fetch(self, username: str) -> Any:
        url = self.mounts_url.replace("{username}", quote(username, safe=""))
        headers = {"Accept": "application/json"}
        if self.service_token:
            headers["Authorization"] = f"Bearer {self.service_token}"
        client = AsyncHTTPClient()
        delay = self.backoff
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = await client.fetch(
                    HTTPRequest(
                        url,
                        headers=headers,
                        connect_timeout=self.timeout,
                        request_timeout=self.timeout,
                        follow_redirects=False,
                    )
                )
            except HTTPClientError as e:
                # the LIMS's body is never shown: it might echo the request
                if e.code in (429,) or e.code >= 500 or e.code == 599:
                    problem = (
                        f"the LIMS answered {e.code}"
                        if e.code != 599
                        else "the LIMS did not answer in time"
                    )
                    if not last:
                        await asyncio.sleep(delay)
                        delay *= 2
                        continue
                    raise MountsRefused(f"{problem} ({attempt + 1} attempts).") from None
                raise MountsRefused(f"the LIMS answered {e.code} for this user.") from None
            except (OSError, asyncio.TimeoutError):
                if not last:
                    await asyncio.sleep(delay)
                    delay *= 2
                    continue
                raise MountsRefused(
                    f"the LIMS is not reachable ({attempt + 1} attempts)."
                ) from None
            if len(response.body) > MAX_ANSWER_BYTES:
                raise MountsRefused("the LIMS's answer is too large.")
            try:
                return json.loads(response.body)
            except ValueError:
                raise MountsRefused("the LIMS's answer is not JSON.") from None
        raise AssertionError("unreachable")
