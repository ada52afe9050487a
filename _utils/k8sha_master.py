"""
The master's own execution modules, with its compiled pillar, for the project's runners: the
reads every event needs (the description, the settings, the fault catalogue) are made once per
CACHE_SECONDS, since admission runs for every event of a storm.
"""

import copy
import os
import time

import salt.loader
import salt.pillar

CACHE_SECONDS = 30
READS = ("cluster_topology.settings", "cluster_topology.description", "cluster_topology.members",
         "heal_check.catalogue")
_CACHE = {}


class MasterFunctions:
    """``functions[name](*args)``; the READS are answered from memory after their first call."""

    def __init__(self, functions):
        self.functions, self.reads = functions, {}

    def __getitem__(self, name):
        if name not in READS:
            return self.functions[name]

        def read(*args):
            if (name, args) not in self.reads:
                self.reads[(name, args)] = self.functions[name](*args)
            return copy.deepcopy(self.reads[(name, args)])
        return read


def functions(opts):
    """MasterFunctions for the master ``opts``, built once per CACHE_SECONDS (pillar compiled,
    modules loaded)."""
    cached = _CACHE.get("functions")
    if cached and time.monotonic() - cached[0] < CACHE_SECONDS:
        return cached[1]
    opts = copy.deepcopy(opts)
    opts["grains"] = {}
    opts["pillar"] = salt.pillar.get_pillar(opts, opts["grains"], opts["id"], saltenv="base").compile_pillar()
    master = MasterFunctions(salt.loader.minion_mods(opts, utils=salt.loader.utils(opts), context={}))
    _CACHE["functions"] = (time.monotonic(), master)
    return master


def heal_directory(opts, settings):
    """Where the heal file lives: ``heal:state_dir``, else the master's cachedir/k8sha-heal."""
    return settings["heal"]["state_dir"] or os.path.join(opts["cachedir"], "k8sha-heal")
