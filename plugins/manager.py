"""The plugin manager: built-ins first, then every `tokar` entry point, all through one path.

Nothing happens at import time. `get_plugin_manager()` creates the manager on first use; the
registries are (re)built from the hooks whenever they are asked for after a plugin was registered
or unregistered, so a test or a notebook can `register()` a plugin object and use it at once.
"""

from __future__ import annotations

import functools
import logging
from importlib import metadata

import pluggy

from plugins import hookspecs
from plugins.registry import Registries, Registry

logger = logging.getLogger(__name__)

# hook name -> attribute of Registries it fills
_HOOKS = {
    "tokar_register_tokenizers": "tokenizers",
    "tokar_register_priors": "priors",
    "tokar_register_sources": "sources",
}


class PluginManager(pluggy.PluginManager):
    """pluggy's manager plus the registries its plugins fill."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT)
        self.add_hookspecs(hookspecs)
        self._registries: Registries | None = None

    def register(self, plugin: object, name: str | None = None) -> str | None:
        self._registries = None
        return super().register(plugin, name)

    def unregister(self, plugin: object = None, name: str | None = None) -> object:
        self._registries = None
        return super().unregister(plugin, name)

    @property
    def registries(self) -> Registries:
        if self._registries is None:
            self._registries = self._build_registries()
        return self._registries

    def provider(self, plugin: object) -> str:
        """Human name of whoever shipped `plugin`: its distribution if it came from one."""
        for candidate, dist in self.list_plugin_distinfo():
            if candidate is plugin:
                return f"{dist.metadata['Name']} {dist.version}"
        if getattr(plugin, "__name__", None) == "plugins.builtin":
            return f"tokar {_tokar_version()}"
        return self.get_name(plugin) or repr(plugin)

    def _build_registries(self) -> Registries:
        registries = Registries(Registry("tokenizer"), Registry("prior"), Registry("source"))
        for hook_name, attr in _HOOKS.items():
            registry = getattr(registries, attr)
            # Call implementations one by one, in registration order (built-ins first), so that
            # each registration is attributed to the plugin that made it and a duplicate names
            # both providers.
            for impl in getattr(self.hook, hook_name).get_hookimpls():
                provider = self.provider(impl.plugin)
                impl.function(register=functools.partial(registry.register, provider=provider))
        return registries


def _tokar_version() -> str:
    try:
        return metadata.version("tokar")
    except metadata.PackageNotFoundError:  # running from a source tree without installing
        return "(source)"


def create_plugin_manager(load_entrypoints: bool = True) -> PluginManager:
    """A fresh manager with the built-ins and, unless disabled, every installed `tokar` plugin."""
    from plugins import builtin  # deferred: importing it imports torch

    pm = PluginManager()
    pm.register(builtin, name="tokar.builtin")
    if load_entrypoints:
        count = pm.load_setuptools_entrypoints(hookspecs.PROJECT)
        logger.debug("loaded %d tokar plugin(s) from entry points", count)
    return pm


_manager: PluginManager | None = None


def get_plugin_manager() -> PluginManager:
    """The process-wide manager, created on first use."""
    global _manager
    if _manager is None:
        _manager = create_plugin_manager()
    return _manager


def set_plugin_manager(pm: PluginManager | None) -> None:
    """Replace the process-wide manager (None: rebuild on next use). Mostly for tests."""
    global _manager
    _manager = pm


def get_registries() -> Registries:
    return get_plugin_manager().registries
