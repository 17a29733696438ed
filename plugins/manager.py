"""The plugin manager: built-ins first, then every `tokar` entry point, all through one path.

The built-ins are the `plugin` modules of tokar's own packages, listed by name in
`BUILTIN_PLUGINS` and imported when the manager is created (pytest lists its built-in plugins the
same way): `plugins` sits below every package and imports none of them, so the import graph has
no circle. Nothing happens at import time. `get_plugin_manager()` creates the manager on first use; the
registries are (re)built from the hooks whenever they are asked for after a plugin was registered
or unregistered, so a test or a notebook can `register()` a plugin object and use it at once.
"""

from __future__ import annotations

import importlib
import logging
from collections import defaultdict
from collections.abc import Callable
from importlib import metadata
from typing import Any

import pluggy

from plugins import hookspecs
from plugins.errors import RegistryError, did_you_mean
from plugins.registry import Registries, Registry

logger = logging.getLogger(__name__)

# tokar's own plugins, one per package, in layer order: loaded by name, registered like any other
BUILTIN_PLUGINS = ("tokenizers_ar.plugin", "priors.plugin", "pipelines.plugin")
KINDS = ("tokenizer", "prior", "source", "logits processor", "head")  # Registries' field order

# hook name -> attribute of Registries it fills
_HOOKS = {
    "tokar_register_tokenizers": "tokenizers",
    "tokar_register_priors": "priors",
    "tokar_register_sources": "sources",
    "tokar_register_logits_processors": "processors",
    "tokar_register_heads": "heads",
}


class PluginManager(pluggy.PluginManager):
    """pluggy's manager plus the registries its plugins fill."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT)
        self.add_hookspecs(hookspecs)
        self._registries: Registries | None = None
        self._distributions: dict[int, str] = {}  # id(plugin) -> "name version"

    def load_entrypoint_plugins(self, group: str = hookspecs.PROJECT) -> int:
        """Register every installed plugin of `group`, one at a time: a plugin that fails to
        import (an exception, or even sys.exit()) is skipped with a warning naming its
        distribution, and the rest still load."""
        count = 0
        for ep in metadata.entry_points(group=group):
            if self.get_plugin(ep.name) is not None or self.is_blocked(ep.name):
                continue
            dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist else ep.value
            try:
                plugin = ep.load()
                self.register(plugin, name=ep.name)
            except KeyboardInterrupt:  # the user's Ctrl-C still stops tokar
                raise
            except BaseException as exc:  # noqa: BLE001 - a broken third-party package must not
                # break tokar: not an exception, and not a sys.exit() at import either (that ended
                # every command silently with status 0)
                what = f"it called sys.exit({exc.code!r}) while being imported" \
                    if isinstance(exc, SystemExit) else f"{type(exc).__name__}: {exc}"
                logger.warning("skipping tokar plugin '%s' from %s: %s", ep.name, dist, what)
                continue
            self._distributions[id(plugin)] = dist
            count += 1
        return count

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

    def is_builtin(self, plugin: object) -> bool:
        """Whether `plugin` is one of tokar's own (BUILTIN_PLUGINS): its names win a clash."""
        return getattr(plugin, "__name__", None) in BUILTIN_PLUGINS

    def provider(self, plugin: object) -> str:
        """Human name of whoever shipped `plugin`: its distribution if it came from one."""
        if id(plugin) in self._distributions:
            return self._distributions[id(plugin)]
        if self.is_builtin(plugin):
            return f"tokar {tokar_version()}"
        return self.get_name(plugin) or repr(plugin)

    def _build_registries(self) -> Registries:
        checks = self._collect_checks()
        registries = Registries(*(Registry(kind, _all_of(checks[kind])) for kind in KINDS))
        for problem in self._unknown_hook_problems():
            registries.problems.append(problem)
            logger.warning("%s", problem)
        for hook_name, attr in _HOOKS.items():
            registry = getattr(registries, attr)
            # Call implementations one by one, in registration order (built-ins first), so that
            # each registration is attributed to the plugin that made it and a duplicate names
            # both providers. One bad registration never stops the others: it is refused with
            # a warning naming its plugin, and every problem is kept for `tokar plugins`.
            for impl in getattr(self.hook, hook_name).get_hookimpls():
                provider = self.provider(impl.plugin)

                def register(name: str, component: object, provider: str = provider,
                             registry: Registry = registry,
                             builtin: bool = self.is_builtin(impl.plugin)) -> None:
                    try:
                        registry.register(name, component, provider=provider, builtin=builtin)
                    except RegistryError as exc:
                        registries.problems.append(str(exc))
                        logger.warning("%s", exc)

                try:
                    impl.function(register=register)
                except Exception as exc:  # a broken third-party hook must not break tokar
                    problem = (f"tokar plugin {provider} failed in {hook_name} and is skipped: "
                               f"{type(exc).__name__}: {exc}")
                    registries.problems.append(problem)
                    logger.warning("%s", problem)
        return registries

    def _unknown_hook_problems(self) -> list[str]:
        """A `@hookimpl` whose name is no tokar hook (`tokar_register_prior`, one s short) is
        never called: pluggy accepts it silently unless asked. Each one becomes a problem naming
        its plugin and the nearest hook, and the plugin's other hooks still run."""
        hooks = sorted(name for name, caller in vars(self.hook).items()
                       if getattr(caller, "spec", None) is not None)
        problems = []
        for name, caller in sorted(vars(self.hook).items()):
            if getattr(caller, "spec", True) is not None:  # a known hook (or not a hook caller)
                continue
            for impl in caller.get_hookimpls():
                hint = did_you_mean(name, hooks) or f" tokar's hooks: {', '.join(hooks)}."
                problems.append(f"tokar plugin {self.provider(impl.plugin)} implements '{name}', "
                                f"which is not a tokar hook, so it is never called.{hint}")
        return problems

    def _collect_checks(self) -> dict[str, list[Callable[[Any], list[str]]]]:
        """kind -> every check registered for it (`tokar_register_checks`); a kind nobody
        checks accepts anything its hooks register."""
        checks: dict[str, list[Callable[[Any], list[str]]]] = defaultdict(list)
        for impl in self.hook.tokar_register_checks.get_hookimpls():
            def register(kind: str, check: Callable[[Any], list[str]]) -> None:
                if kind not in KINDS:
                    raise RegistryError(f"tokar_register_checks: unknown kind {kind!r}; kinds: "
                                        f"{', '.join(KINDS)}")
                checks[kind].append(check)

            try:
                impl.function(register=register)
            except Exception as exc:  # a broken third-party hook must not break tokar
                logger.warning("tokar plugin %s failed in tokar_register_checks and is skipped: %s: %s",
                               self.provider(impl.plugin), type(exc).__name__, exc)
        return checks


def _all_of(checks: list[Callable[[Any], list[str]]]) -> Callable[[Any], list[str]] | None:
    """One check that runs each of `checks` (None for none)."""
    if not checks:
        return None
    return lambda component: [problem for check in checks for problem in check(component)]


def tokar_version() -> str:
    """The installed tokar's version (run.json and `tokar plugins` record it)."""
    try:
        return metadata.version("tokar")
    except metadata.PackageNotFoundError:  # running from a source tree without installing
        return "(source)"


def create_plugin_manager(load_entrypoints: bool = True) -> PluginManager:
    """A fresh manager with the built-ins and, unless disabled, every installed `tokar` plugin."""
    pm = PluginManager()
    for module in BUILTIN_PLUGINS:  # imported here, not at import time: they import torch
        pm.register(importlib.import_module(module), name=f"tokar.{module.partition('.')[0]}")
    if load_entrypoints:
        count = pm.load_entrypoint_plugins()
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
