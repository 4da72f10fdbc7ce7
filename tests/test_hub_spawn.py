"""LimsSpawnHook against a LIMS stand-in on 127.0.0.1 and real spawner classes
without a cluster or a Docker engine: KubeSpawner builds its pod manifest
(``_mock=True``, a kubeconfig pointing nowhere), DockerSpawner its binds and
environment, JupyterHub's LocalProcessSpawner its environment."""

from __future__ import annotations

import asyncio
import json
import logging
from types import SimpleNamespace
from typing import Any

import pytest
from tornado import httpserver, netutil, web
from traitlets.config import Config

from jupyter_lims_bridge.hub import LimsSpawnHook
from jupyter_lims_bridge.hub.spawnhook import MountsRefused, parse_answer, volume_name

KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "https://127.0.0.1:9"}}]
contexts: [{name: none, context: {cluster: none, user: none, namespace: jhub}}]
current-context: none
users: [{name: none, user: {token: not-a-cluster}}]
"""

ALICE = {
    "mounts": [
        {"name": "archive", "nfs": {"server": "nfs.example.org", "path": "/export/archive/{x}"}},
        {
            "name": "Raw_Data",
            "readOnly": False,
            "pvc": {"claimName": "lab-data", "subPath": "alice/raw"},
        },
        {"name": "scratch", "hostPath": "/data/scratch/alice"},
    ],
    "uid": 1234,
    "gid": 100,
    "supplementalGroups": [2000],
}


@pytest.fixture(autouse=True)
def no_cluster(tmp_path_factory, monkeypatch):
    # KubeSpawner loads a kubeconfig when built; this one names no reachable cluster
    path = tmp_path_factory.getbasetemp() / "kubeconfig.yaml"
    path.write_text(KUBECONFIG)
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    # kubernetes_asyncio's Configuration sets the urllib3 logger to WARNING, for the
    # whole process: give later tests (which read urllib3's debug lines) theirs back
    loggers = logging.root.manager.loggerDict
    levels = {name: lg.level for name, lg in loggers.items() if isinstance(lg, logging.Logger)}
    yield
    for name, lg in list(loggers.items()):
        if isinstance(lg, logging.Logger) and lg.level != levels.get(name, logging.NOTSET):
            lg.setLevel(levels.get(name, logging.NOTSET))


class Lims:
    """A LIMS stand-in: answers GET /users/<name>/mounts from ``answers`` (name -> list
    of (status, body), the last one repeating) and records each request."""

    def __init__(self, answers: dict[str, list[tuple[int, Any]]], delay: float = 0.0) -> None:
        self.answers = answers
        self.delay = delay
        self.requests: list[dict[str, Any]] = []
        lims = self

        class Handler(web.RequestHandler):
            async def get(self, name: str) -> None:
                lims.requests.append(
                    {"path": self.request.path, "auth": self.request.headers.get("Authorization")}
                )
                if lims.delay:
                    await asyncio.sleep(lims.delay)
                queue = lims.answers.get(name, [(404, {"error": "no such user"})])
                status, body = queue.pop(0) if len(queue) > 1 else queue[0]
                self.set_status(status)
                self.finish(json.dumps(body) if not isinstance(body, str) else body)

        self.app = web.Application([(r"/users/([^/]+)/mounts", Handler)])

    async def __aenter__(self) -> Lims:
        sockets = netutil.bind_sockets(0, "127.0.0.1")
        self.port = sockets[0].getsockname()[1]
        self.server = httpserver.HTTPServer(self.app)
        self.server.add_sockets(sockets)
        self.url = f"http://127.0.0.1:{self.port}/users/{{username}}/mounts"
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.server.stop()


def user(name: str) -> Any:
    return SimpleNamespace(name=name, id=1, url=f"/user/{name}/", escaped_name=name)


def kube(name: str, config: Config | None = None) -> Any:
    from kubespawner import KubeSpawner

    return KubeSpawner(config=config or Config(), user=user(name), _mock=True)


def docker(name: str, config: Config | None = None) -> Any:
    from dockerspawner import DockerSpawner

    hub = SimpleNamespace(
        api_url="http://hub:8081/hub/api",
        base_url="/hub/",
        public_host="",
        url="http://hub:8081/hub/",
    )
    return DockerSpawner(config=config or Config(), user=user(name), hub=hub)


def local(name: str) -> Any:
    from jupyterhub.spawner import SimpleLocalProcessSpawner

    hub = SimpleNamespace(
        api_url="http://hub:8081/hub/api",
        base_url="/hub/",
        public_host="",
        url="http://hub:8081/hub/",
    )
    return SimpleLocalProcessSpawner(user=user(name), hub=hub, home_dir_template="/tmp/{username}")


async def manifest(spawner: Any) -> dict[str, Any]:
    """The pod as KubeSpawner would send it to the API server (camelCase JSON)."""
    from kubernetes_asyncio.client import ApiClient

    pod = await spawner.get_pod_manifest()
    async with ApiClient() as api:
        return api.sanitize_for_serialization(pod)


def env_of(pod: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}


async def spawn_hook(spawner: Any, hook: LimsSpawnHook) -> Any:
    """As JupyterHub runs it: ``Spawner.pre_spawn_hook``, awaited before ``start()``."""
    spawner.pre_spawn_hook = hook
    return await spawner.run_pre_spawn_hook()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# -- KubeSpawner ------------------------------------------------------------------


def test_alices_pod_gets_her_volumes_mounts_ids_and_env_and_bobs_none_of_them():
    async def main():
        async with Lims({"alice": [(200, ALICE)], "bob": [(200, {"mounts": []})]}) as lims:
            config = Config()
            config.KubeSpawner.volumes = [{"name": "home", "emptyDir": {}}]
            config.KubeSpawner.volume_mounts = [{"name": "home", "mountPath": "/home/jovyan"}]
            config.KubeSpawner.environment = {"SITE": "{username}"}
            hook = LimsSpawnHook(mounts_url=lims.url, service_token="s3cret")
            alice = kube("alice", config)
            await spawn_hook(alice, hook)
            pod = await manifest(alice)
            # bob's spawner is built after alice's hook ran, from the same config
            bob = kube("bob", config)
            await spawn_hook(bob, hook)
            bob_pod = await manifest(bob)
            return pod, bob_pod, config, lims.requests

    pod, bob_pod, config, requests = run(main())
    spec, container = pod["spec"], pod["spec"]["containers"][0]
    volumes = {v["name"]: v for v in spec["volumes"]}
    raw_name = volume_name("Raw_Data")
    assert set(volumes) == {"home", "lims-archive", raw_name, "lims-scratch"}
    assert volumes["lims-archive"]["nfs"] == {
        "server": "nfs.example.org",
        "path": "/export/archive/{x}",  # a literal brace survives KubeSpawner's str.format
        "readOnly": True,  # read-only unless the LIMS says otherwise
    }
    assert volumes["lims-scratch"]["hostPath"]["path"] == "/data/scratch/alice"
    assert volumes[raw_name]["persistentVolumeClaim"] == {
        "claimName": "lab-data",
        "readOnly": False,
    }
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/mnt/lims/archive"] == {
        "name": "lims-archive",
        "mountPath": "/mnt/lims/archive",
        "readOnly": True,
    }
    assert mounts["/mnt/lims/Raw_Data"] == {
        "name": raw_name,
        "mountPath": "/mnt/lims/Raw_Data",
        "readOnly": False,
        "subPath": "alice/raw",
    }
    assert "/home/jovyan" in mounts
    assert (spec["securityContext"]["fsGroup"], spec["securityContext"]["supplementalGroups"]) == (
        100,
        [2000],
    )
    assert (
        container["securityContext"]["runAsUser"],
        container["securityContext"]["runAsGroup"],
    ) == (1234, 100)
    env = env_of(pod)
    assert json.loads(env["LIMS_BRIDGE_DATA_MOUNTS"]) == {
        "archive": "/mnt/lims/archive",
        "Raw_Data": "/mnt/lims/Raw_Data",
        "scratch": "/mnt/lims/scratch",
    }
    assert env["SITE"] == "alice"  # the operator's templated env still expands

    # bob's pod holds nothing of alice's
    bob_spec, bob_container = bob_pod["spec"], bob_pod["spec"]["containers"][0]
    assert [v["name"] for v in bob_spec["volumes"]] == ["home"]
    assert [m["mountPath"] for m in bob_container["volumeMounts"]] == ["/home/jovyan"]
    assert json.loads(env_of(bob_pod)["LIMS_BRIDGE_DATA_MOUNTS"]) == {}
    assert "supplementalGroups" not in bob_spec.get("securityContext", {})
    assert "fsGroup" not in bob_spec.get("securityContext", {})
    assert bob_container.get("securityContext", {}).get("runAsUser") != 1234
    assert "1234" not in json.dumps(bob_pod) and "alice" not in json.dumps(bob_pod)
    # and the configuration all spawners are built from is untouched
    assert config.KubeSpawner.volumes == [{"name": "home", "emptyDir": {}}]
    assert [r["auth"] for r in requests] == ["Bearer s3cret", "Bearer s3cret"]


def test_volumes_configured_as_a_dict_stay_a_dict():
    async def main():
        async with Lims({"alice": [(200, ALICE)]}) as lims:
            config = Config()
            config.KubeSpawner.volumes = {"home": {"name": "home", "emptyDir": {}}}
            spawner = kube("alice", config)
            await spawn_hook(spawner, LimsSpawnHook(mounts_url=lims.url))
            return spawner, await manifest(spawner)

    spawner, pod = run(main())
    assert isinstance(spawner.volumes, dict) and "lims-archive" in spawner.volumes
    assert "lims-archive" in {v["name"] for v in pod["spec"]["volumes"]}


def test_volume_names_are_dns_labels_and_unique():
    names = ["archive", "Raw_Data", "raw-data", "raw.data", "A" * 63, "x" * 63 + "y"]
    labels = [volume_name(n) for n in names]
    assert len(set(labels)) == len(labels)
    import re

    for label in labels:
        assert re.match(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", label), label
        assert label.startswith("lims-")


# -- DockerSpawner and a local process ------------------------------------------------


def test_docker_gets_host_binds_read_only_by_default_and_nb_uid():
    async def main():
        answer = {
            "mounts": [
                {"name": "scratch", "hostPath": "/data/scratch/alice"},
                {"name": "results", "readOnly": False, "hostPath": "/data/results/alice"},
                {"name": "archive", "nfs": {"server": "nfs", "path": "/export"}},
            ],
            "uid": 1234,
            "gid": 100,
            "supplementalGroups": [2000],
        }
        async with Lims({"alice": [(200, answer)], "bob": [(200, {"mounts": []})]}) as lims:
            hook = LimsSpawnHook(mounts_url=lims.url, service_token="t")
            alice = docker("alice")
            await spawn_hook(alice, hook)
            bob = docker("bob")
            await spawn_hook(bob, hook)
            return alice, bob

    alice, bob = run(main())
    assert alice.volume_binds == {
        "/data/scratch/alice": {"bind": "/mnt/lims/scratch", "mode": "ro"},
        "/data/results/alice": {"bind": "/mnt/lims/results", "mode": "rw"},
    }
    env = alice.get_env()
    assert (env["NB_UID"], env["NB_GID"]) == ("1234", "100")
    # an NFS export cannot be bind-mounted by DockerSpawner: skipped, not linked
    assert json.loads(env["LIMS_BRIDGE_DATA_MOUNTS"]) == {
        "scratch": "/mnt/lims/scratch",
        "results": "/mnt/lims/results",
    }
    assert alice.extra_host_config["group_add"] == ["2000"]
    assert bob.volume_binds == {} and "NB_UID" not in bob.get_env()
    assert "group_add" not in bob.extra_host_config


def test_a_local_process_gets_only_host_paths_mapped_by_name():
    async def main():
        async with Lims({"alice": [(200, ALICE)]}) as lims:
            spawner = local("alice")
            paths = await spawn_hook(spawner, LimsSpawnHook(mounts_url=lims.url))
            return spawner, paths

    spawner, paths = run(main())
    assert paths == {"scratch": "/data/scratch/alice"}
    assert json.loads(spawner.get_env()["LIMS_BRIDGE_DATA_MOUNTS"]) == {
        "scratch": "/data/scratch/alice"
    }


def test_mounts_the_operator_set_are_kept():
    async def main():
        async with Lims({"alice": [(200, ALICE)]}) as lims:
            config = Config()
            # written for KubeSpawner, which str.formats env values: braces doubled
            config.KubeSpawner.environment = {"LIMS_BRIDGE_DATA_MOUNTS": '{{"site": "/mnt/site"}}'}
            spawner = kube("alice", config)
            await spawn_hook(spawner, LimsSpawnHook(mounts_url=lims.url))
            return await manifest(spawner)

    mounts = json.loads(env_of(run(main()))["LIMS_BRIDGE_DATA_MOUNTS"])
    assert mounts["site"] == "/mnt/site" and mounts["archive"] == "/mnt/lims/archive"


# -- asking the LIMS ------------------------------------------------------------------


def test_the_user_name_is_url_escaped_and_the_service_token_sent():
    async def main():
        async with Lims({"a b/c": [(200, {"mounts": []})]}) as lims:
            await spawn_hook(
                local("a b/c"), LimsSpawnHook(mounts_url=lims.url, service_token="tok")
            )
            return lims.requests

    assert run(main()) == [{"path": "/users/a%20b%2Fc/mounts", "auth": "Bearer tok"}]


def test_server_errors_are_retried_with_backoff_then_succeed():
    async def main():
        answers = {"alice": [(503, {}), (502, {}), (200, ALICE)]}
        async with Lims(answers) as lims:
            hook = LimsSpawnHook(mounts_url=lims.url, retries=2, backoff=0.01)
            paths = await spawn_hook(local("alice"), hook)
            return paths, len(lims.requests)

    paths, count = run(main())
    assert paths == {"scratch": "/data/scratch/alice"} and count == 3


def test_retries_are_bounded():
    async def main():
        async with Lims({"alice": [(503, {})]}) as lims:
            hook = LimsSpawnHook(mounts_url=lims.url, retries=2, backoff=0.01)
            with pytest.raises(RuntimeError, match="503"):
                await spawn_hook(local("alice"), hook)
            return len(lims.requests)

    assert run(main()) == 3


def test_a_client_error_is_not_retried():
    async def main():
        async with Lims({}) as lims:  # 404: the LIMS does not know the user
            with pytest.raises(RuntimeError, match="404"):
                await spawn_hook(local("alice"), LimsSpawnHook(mounts_url=lims.url, backoff=0.01))
            return len(lims.requests)

    assert run(main()) == 1


def test_a_slow_lims_times_out():
    async def main():
        async with Lims({"alice": [(200, ALICE)]}, delay=2.0) as lims:
            hook = LimsSpawnHook(mounts_url=lims.url, timeout=0.2, retries=1, backoff=0.01)
            with pytest.raises(RuntimeError, match="in time"):
                await spawn_hook(local("alice"), hook)

    run(main())


def _closed_port_url() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/users/{{username}}/mounts"


def test_lims_down_with_on_error_fail_fails_the_spawn_with_a_clear_message(caplog):
    hook = LimsSpawnHook(
        mounts_url=_closed_port_url(), service_token="s3cret", retries=1, backoff=0.01
    )

    async def main():
        spawner = kube("alice")
        with pytest.raises(RuntimeError) as info:
            await spawn_hook(spawner, hook)
        return spawner, info

    with caplog.at_level(logging.DEBUG):
        spawner, info = run(main())
    assert "LIMS data for your server could not be prepared" in str(info.value)
    assert "not reachable" in str(info.value)
    assert spawner.volumes == [] and "LIMS_BRIDGE_DATA_MOUNTS" not in spawner.environment
    assert "s3cret" not in caplog.text


def test_lims_down_with_on_error_continue_spawns_without_mounts(caplog):
    hook = LimsSpawnHook(mounts_url=_closed_port_url(), on_error="continue", retries=0)

    async def main():
        spawner = kube("alice")
        assert await spawn_hook(spawner, hook) == {}
        return spawner

    with caplog.at_level(logging.WARNING):
        spawner = run(main())
    assert spawner.volumes == [] and "LIMS_BRIDGE_DATA_MOUNTS" not in spawner.environment
    assert "no LIMS mounts for alice" in caplog.text


def test_options_come_from_config():
    c = Config()
    c.LimsSpawnHook.mounts_url = "https://lims.example.org/api/jupyter/users/{username}/mounts"
    c.LimsSpawnHook.on_error = "continue"
    hook = LimsSpawnHook(config=c)
    assert (hook.mounts_url, hook.on_error, hook.timeout, hook.mount_root) == (
        c.LimsSpawnHook.mounts_url,
        "continue",
        10.0,
        "/mnt/lims",
    )


def test_without_a_mounts_url_the_hook_does_nothing():
    spawner = local("alice")
    assert run(spawn_hook(spawner, LimsSpawnHook())) == {}
    assert "LIMS_BRIDGE_DATA_MOUNTS" not in spawner.environment


# -- refusals: nothing applied -------------------------------------------------------


@pytest.mark.parametrize(
    "mount, message",
    [
        ({"name": "../etc", "hostPath": "/data"}, "one safe path component"),
        ({"name": "a/b", "hostPath": "/data"}, "one safe path component"),
        ({"name": "..", "hostPath": "/data"}, "one safe path component"),
        ({"name": "", "hostPath": "/data"}, "one safe path component"),
        ({"name": "x", "hostPath": "data/x"}, "absolute path"),
        ({"name": "x", "hostPath": "/data/../etc"}, "'..'"),
        ({"name": "x", "nfs": {"server": "nfs", "path": "export"}}, "absolute path"),
        ({"name": "x", "pvc": {"claimName": "c", "subPath": "../other"}}, "'..'"),
        ({"name": "x", "pvc": {"claimName": "c", "subPath": "/abs"}}, "relative path"),
        ({"name": "x", "smb": {"server": "s"}}, "exactly one of"),
        ({"name": "x", "hostPath": "/a", "nfs": {"server": "s", "path": "/b"}}, "exactly one of"),
        ({"name": "x", "readOnly": "no", "hostPath": "/a"}, "readOnly"),
    ],
)
def test_a_bad_mount_refuses_the_whole_answer_and_applies_nothing(mount, message):
    answer = {"mounts": [{"name": "good", "hostPath": "/data/good"}, mount], "uid": 1234}
    with pytest.raises(MountsRefused, match=message):
        parse_answer(answer)

    async def main():
        async with Lims({"alice": [(200, answer)]}) as lims:
            spawner = kube("alice")
            with pytest.raises(RuntimeError, match=message):
                await spawn_hook(spawner, LimsSpawnHook(mounts_url=lims.url))
            return spawner

    spawner = run(main())
    assert spawner.volumes == [] and spawner.volume_mounts == [] and spawner.uid is None
    assert "LIMS_BRIDGE_DATA_MOUNTS" not in spawner.environment


@pytest.mark.parametrize(
    "answer",
    [
        [],
        {"mounts": {}},
        {"mounts": [], "uid": -1},
        {"mounts": [], "uid": True},
        {"mounts": [], "supplementalGroups": "2000"},
        {"mounts": [{"name": "a", "hostPath": "/a"}, {"name": "a", "hostPath": "/b"}]},
    ],
)
def test_malformed_answers_are_refused(answer):
    with pytest.raises(MountsRefused):
        parse_answer(answer)


def test_an_answer_that_is_not_json_is_refused():
    async def main():
        async with Lims({"alice": [(200, "<html>oops</html>")]}) as lims:
            with pytest.raises(RuntimeError, match="not JSON"):
                await spawn_hook(local("alice"), LimsSpawnHook(mounts_url=lims.url))

    run(main())


def test_a_plain_http_mounts_url_off_loopback_is_warned_about(caplog):
    with caplog.at_level(logging.WARNING):
        LimsSpawnHook(mounts_url="http://127.0.0.1:9/users/{username}/mounts")
        assert "plain http" not in caplog.text
        LimsSpawnHook(mounts_url="http://lims.example.org/users/{username}/mounts")
    assert "plain http" in caplog.text
    with pytest.raises(Exception, match="http"):
        LimsSpawnHook(mounts_url="file:///etc/passwd")
