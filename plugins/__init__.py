"""tokar's plugin system: pluggy hooks that register tokenizers, priors and data sources.

    from plugins import hookimpl, get_registries
    get_registries().priors.get("gpt")
"""

from plugins.errors import TokarError
from plugins.hookspecs import hookimpl, hookspec
from plugins.manager import (
    PluginManager,
    create_plugin_manager,
    get_plugin_manager,
    get_registries,
    set_plugin_manager,
)
from plugins.registry import Entry, Registries, Registry

__all__ = [
    "Entry",
    "PluginManager",
    "Registries",
    "Registry",
    "TokarError",
    "create_plugin_manager",
    "get_plugin_manager",
    "get_registries",
    "hookimpl",
    "hookspec",
    "set_plugin_manager",
]
