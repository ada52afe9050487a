"""
Render the project's states and templates with real Salt, in-process, for a given
cluster description: a masterless minion whose file_roots are the project's salt/,
whose pillar is the project's pillar/top.sls over a description the test writes.
"""

import copy
import importlib.util
import pathlib
import shutil

import salt._logging
import salt.client
import salt.config
import yaml

# Salt buffers log records in a temporary handler until its own logging is set up and
# flushes them to a closed stderr at exit; hand them to Python logging (pytest) instead.
salt._logging.shutdown_temp_handler()

REPO = pathlib.Path(__file__).resolve().parents[2]
SHIPPED_DESCRIPTION = yaml.safe_load((REPO / "pillar" / "cluster.sls").read_text())
DEFAULTS = yaml.safe_load((REPO / "salt" / "k8sha" / "defaults.yaml").read_text())


def load(kind, name):
    """A module of the project's Salt extensions (``kind``: _modules, _states, _utils, ...)
    imported as plain Python, for its pure functions."""
    spec = importlib.util.spec_from_file_location(name, REPO / kind / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_module(name):
    """A Salt execution module from _modules/ (see load)."""
    return load("_modules", name)


def flows(desc):
    """cluster_ports.flows for ``desc`` with the shipped port settings."""
    return load_module("cluster_ports").flows(desc, DEFAULTS["k8sha"]["ports"])


def as_utils(*names):
    """Modules of _utils/ as the entries Salt's __utils__ would give a module; each of them
    sees the others through its own __utils__, as under Salt's loader."""
    utils = {}
    for name in names:
        module = load("_utils", name)
        module.__utils__ = utils
        utils.update({f"{name}.{k}": v for k, v in vars(module).items() if callable(v) and not k.startswith("_")})
    return utils


def merged(base, override):
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def description(**overrides):
    """The shipped description (pillar/cluster.sls) over its defaults, as a node reads it, with
    `cluster` keys overridden."""
    return merged(merged(DEFAULTS["cluster"], SHIPPED_DESCRIPTION["cluster"]), overrides)


class RenderedMinion:
    """A masterless minion over the project's tree, with its own pillar."""

    def __init__(self, root, cluster, minion_id="lb1", secrets=None, lookup=None, opts=None):
        self.root = pathlib.Path(root)
        pillar = self.root / "pillar"
        (pillar / "secrets").mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "pillar" / "top.sls", pillar / "top.sls")
        data = {"cluster": cluster}
        if lookup:
            data["k8sha"] = {"lookup": lookup}
        (pillar / "cluster.sls").write_text(yaml.safe_dump(data))
        if secrets is not None:
            (pillar / "secrets" / "loadbalancer.sls").write_text(yaml.safe_dump(secrets))
        config = self.root / "minion"
        config.write_text(
            yaml.safe_dump(
                {
                    "id": minion_id,
                    "file_client": "local",
                    "root_dir": str(self.root / "salt-root"),
                    "file_roots": {"base": [str(REPO / "salt")]},
                    "pillar_roots": {"base": [str(pillar)]},
                    "module_dirs": [str(REPO)],
                    "log_level": "quiet",
                    "grains": {},
                    **(opts or {}),
                }
            )
        )
        opts = salt.config.minion_config(str(config))
        self.caller = salt.client.Caller(mopts=opts)

    def call(self, fun, *args, **kwargs):
        return self.caller.cmd(fun, *args, **kwargs)

    def show_sls(self, *mods, pillar=None):
        """Compiled state data, or raise with Salt's rendering errors (``pillar``: as passed on
        the command line, e.g. by an orchestration)."""
        out = self.call("state.show_sls", ",".join(mods), **({"pillar": pillar} if pillar else {}))
        if isinstance(out, list):
            raise RenderError("\n".join(str(e) for e in out))
        return out

    def managed_files(self, *mods):
        """{target path: (state id, arguments)} of every file.managed in the states."""
        files = {}
        for state_id, body in self.show_sls(*mods).items():
            if not isinstance(body, dict) or "managed" not in body.get("file", []):
                continue
            args = {}
            for item in body["file"]:
                if isinstance(item, dict):
                    args.update(item)
            files[args.get("name", state_id)] = (state_id, args)
        return files

    def render_file(self, args):
        """The content file.managed would write, rendered by Salt's own template engine."""
        if "contents" in args:
            return args["contents"]
        source = args["source"]
        assert source.startswith("salt://"), source
        text = (REPO / "salt" / source[len("salt://") :]).read_text()
        if args.get("template") != "jinja":
            return text
        return self.call(
            "file.apply_template_on_contents",
            contents=text,
            template="jinja",
            context=args.get("context") or {},
            defaults=args.get("defaults") or {},
            saltenv="base",
        )


class RenderError(Exception):
    pass
