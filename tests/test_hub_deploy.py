"""The deployment recipe in deploy/: one hub configuration, a z2jh values.yaml that
the chart's schema accepts, and images that install what the hub and the users'
servers need. No Docker or Kubernetes: files, the chart's schema and a traitlets Config."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from traitlets.config import Config

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
Z2JH = Path(__file__).parent / "data" / "z2jh"


def deep_merge(base: Any, override: Any) -> Any:
    """helm's merge of a user's values over the chart's defaults: dicts merge, the rest replaces."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = deep_merge(base[key], value) if key in base else copy.deepcopy(value)
        return merged
    return copy.deepcopy(override)


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "values.yaml").read_text())


def test_the_hub_configuration_in_values_yaml_is_deploy_hub_config_py(values):
    # one file, two places: the end-to-end hub loads hub_config.py
    extra = values["hub"]["extraConfig"]["10-lims-bridge"]
    assert extra == (DEPLOY / "hub_config.py").read_text(), (
        "deploy/values.yaml's hub.extraConfig 10-lims-bridge differs from deploy/hub_config.py: "
        "paste the file there again, indented by six spaces"
    )


def test_values_yaml_merged_over_the_chart_defaults_validates_against_its_schema(values):
    schema = yaml.safe_load((Z2JH / "z2jh-values.schema.yaml").read_text())
    defaults = yaml.safe_load((Z2JH / "z2jh-values.yaml").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    merged = deep_merge(defaults, values)
    errors = sorted(
        jsonschema.Draft7Validator(schema).iter_errors(merged), key=lambda e: list(e.path)
    )
    assert not errors, "\n".join(f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors)
    # the check has teeth: a misspelt key is refused
    broken = deep_merge(merged, {"singleuser": {"extraEnvv": {}}})
    assert list(jsonschema.Draft7Validator(schema).iter_errors(broken))


def test_values_yaml_loads_the_authenticator_and_the_images(values):
    assert values["hub"]["config"]["JupyterHub"]["authenticator_class"] == (
        "jupyter_lims_bridge.hub.LimsAuthenticator"
    )
    assert values["singleuser"]["image"]["name"] and values["hub"]["image"]["name"]
    assert "{username}" in values["hub"]["extraEnv"]["LIMS_HUB_MOUNTS_URL"]
    assert "secretKeyRef" in values["hub"]["extraEnv"]["LIMS_HUB_SERVICE_TOKEN"]["valueFrom"]


def test_the_users_environment_names_real_bridge_options(values):
    from jupyter_lims_bridge.app import ENV_PREFIX, LimsBridge

    traits = set(LimsBridge.class_own_traits(config=True))
    for name in values["singleuser"]["extraEnv"]:
        assert name.startswith(ENV_PREFIX) and name[len(ENV_PREFIX) :].lower() in traits, name
    # KubeSpawner str.formats these values: no literal braces may be in them
    for value in values["singleuser"]["extraEnv"].values():
        assert not (isinstance(value, str) and re.search(r"[{}]", value)), value


def load_hub_config(env: dict[str, str], monkeypatch) -> Config:
    """Run deploy/hub_config.py as z2jh's jupyterhub_config.py runs an extraConfig snippet."""
    for name in list(__import__("os").environ):
        if name.startswith(("LIMS_BRIDGE_", "LIMS_HUB_")):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    c = Config()
    source = (DEPLOY / "hub_config.py").read_text()
    exec(compile(source, str(DEPLOY / "hub_config.py"), "exec"), {"c": c})
    return c


def test_the_hub_configuration_builds_the_authenticator_and_the_hook(monkeypatch):
    from jupyter_lims_bridge.hub import LimsAuthenticator, LimsSpawnHook
    from jupyter_lims_bridge.signing import generate_key_pair

    pem = generate_key_pair()[1].decode()
    c = load_hub_config(
        {
            "LIMS_BRIDGE_PUBLIC_KEYS": pem,
            "LIMS_BRIDGE_ISSUERS": "https://eln.example.org",
            "LIMS_HUB_ELN_URL": "https://eln.example.org",
            "LIMS_HUB_MOUNTS_URL": "https://lims.example.org/api/jupyter/users/{username}/mounts",
            "LIMS_HUB_SERVICE_TOKEN": "s3cret",
            "LIMS_HUB_MOUNTS_ON_ERROR": "continue",
        },
        monkeypatch,
    )
    assert c.JupyterHub.authenticator_class == "jupyter_lims_bridge.hub.LimsAuthenticator"
    auth = LimsAuthenticator(config=c)
    assert auth.public_keys == [pem.strip()] and auth.issuers == ["https://eln.example.org"]
    assert auth.verifier.keys.configured
    hook = c.Spawner.pre_spawn_hook
    assert isinstance(hook, LimsSpawnHook)
    assert (hook.service_token, hook.on_error) == ("s3cret", "continue")


def test_without_a_mounts_url_no_hook_is_installed(monkeypatch):
    c = load_hub_config({"LIMS_BRIDGE_JWKS_URL": "https://eln.example.org/jwks.json"}, monkeypatch)
    assert "pre_spawn_hook" not in c.Spawner
    assert c.LimsAuthenticator.jwks_url == "https://eln.example.org/jwks.json"


def test_the_images_install_the_package_on_the_right_bases():
    singleuser = (DEPLOY / "singleuser" / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE_IMAGE=quay\.io/jupyter/\S+", singleuser, re.M)  # Docker Stacks
    assert "pip install" in singleuser and "jupyter_lims_bridge" in singleuser
    hub = (DEPLOY / "hub" / "Dockerfile").read_text()
    assert re.search(r"^FROM quay\.io/jupyterhub/k8s-hub:", hub, re.M)
    assert "[hub]" in hub and "import jupyter_lims_bridge.hub" in hub


def test_the_hub_extra_names_what_the_hub_imports():
    import tomllib

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    names = {re.split(r"[<>=\[ ]", req)[0].lower() for req in extras["hub"]}
    assert {"jupyterhub", "pyjwt"} <= names


def test_the_deploy_doc_names_every_option_of_both_classes_and_the_readme_links_it():
    from jupyter_lims_bridge.hub import LimsAuthenticator, LimsSpawnHook

    doc = (REPO / "docs" / "deploy.md").read_text()
    for cls in (LimsAuthenticator, LimsSpawnHook):
        for name in cls.class_own_traits(config=True):
            assert f"`{name}`" in doc, f"docs/deploy.md does not describe {cls.__name__}.{name}"
    variables = set(re.findall(r'"(LIMS_[A-Z_]+)"', (DEPLOY / "hub_config.py").read_text()))
    assert len(variables) == 7
    for name in variables:
        assert f"`{name}`" in doc, name
    assert "(docs/deploy.md)" in (REPO / "README.md").read_text()
