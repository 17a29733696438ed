"""Reading recipe files safely: YAML bounded in size, values after alias expansion and nesting
(a "billion laughs" file fails at once), and `extends:` chains deep-merged under the file that
names them, bounded in depth and count and free of cycles.

Not here: overrides, `${...}` interpolation and the schema (pipelines/recipe/loader.py).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from pipelines.io.safe import read_text
from plugins.errors import RecipeError, TokarError

MAX_RECIPE_BYTES = 1 << 20
MAX_VALUES = 100_000  # scalars, lists and mappings after alias expansion
MAX_NESTING = 64
MAX_EXTENDS_DEPTH = 16
MAX_EXTENDS_FILES = 64


# -- reading --------------------------------------------------------------------------------------
class _BoundedLoader(yaml.SafeLoader):
    """yaml.SafeLoader that measures a document before building it: aliases let a few lines
    stand for billions of values, and building them (or merging, copying, printing them later)
    would run until memory is gone."""

    def construct_document(self, node: yaml.Node) -> Any:
        size = _expanded_size(node, {}, set(), 0)
        if size > MAX_VALUES:
            raise RecipeError([f"the YAML expands to more than {MAX_VALUES:,} values through its "
                               "aliases (&anchor / *alias); a recipe needs far fewer. Is it a "
                               "'billion laughs' file?"])
        return super().construct_document(node)


def _expanded_size(node: yaml.Node, memo: dict[int, int], active: set[int], depth: int) -> int:
    """Values `node` stands for once every alias is expanded (capped just above MAX_VALUES)."""
    key = id(node)
    if key in memo:
        return memo[key]
    if key in active:
        raise RecipeError(["the YAML contains an alias that refers to itself (a recursive structure)"])
    if depth > MAX_NESTING:
        raise RecipeError([f"the YAML is nested more than {MAX_NESTING} levels deep"])
    active.add(key)
    if isinstance(node, yaml.SequenceNode):
        children = node.value
    elif isinstance(node, yaml.MappingNode):
        children = [n for pair in node.value for n in pair]
    else:
        children = []
    size = 1
    for child in children:
        size = min(size + _expanded_size(child, memo, active, depth + 1), MAX_VALUES + 1)
    active.discard(key)
    memo[key] = size
    return size


def parse_yaml(text: str, where: str) -> Any:
    """YAML -> Python values, safely and within the bounds above; errors name `where`."""
    loader = _BoundedLoader(text)
    try:
        return loader.get_single_data()
    except RecipeError as exc:
        raise RecipeError(exc.problems, where) from None
    except yaml.YAMLError as exc:
        raise RecipeError([f"not valid YAML: {exc}"], where) from exc
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:  # int("9"*5000), deep nesting
        why = f"{type(exc).__name__}: {str(exc)[:200]}"
        raise RecipeError([f"cannot be read as YAML ({why})"], where) from exc
    finally:
        loader.dispose()


def read_recipe_file(path: Path) -> dict[str, Any]:
    """One recipe file (not what it extends): a mapping of sections."""
    if not path.exists():
        raise RecipeError([f"recipe file not found: {path}"])
    try:
        text = read_text(path, "recipe file", TokarError, max_bytes=MAX_RECIPE_BYTES)
    except TokarError as exc:  # missing, a folder, a FIFO, too large, not UTF-8
        raise RecipeError([str(exc)]) from exc
    raw = parse_yaml(text, str(path))
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise RecipeError([f"a recipe is a mapping of sections, got {type(raw).__name__}"], str(path))
    return raw


def load_raw(path: str | Path, _seen: tuple[Path, ...] = (),
             _loaded: list[Path] | None = None) -> dict[str, Any]:
    """Read a recipe file and everything it extends, deep-merged (this file wins)."""
    try:
        path = Path(path).resolve()
    except (RuntimeError, OSError) as exc:  # Python < 3.13: RuntimeError "Symlink loop"
        raise RecipeError([f"recipe file {path} is a symlink that never reaches a file (a loop of "
                           "links); point it at a recipe"]) from exc
    loaded = [] if _loaded is None else _loaded
    if path in _seen:
        chain = " -> ".join(str(p) for p in (*_seen, path))
        raise RecipeError([f"extends: cycle {chain}"], str(path))
    if len(_seen) >= MAX_EXTENDS_DEPTH:
        raise RecipeError([f"extends: more than {MAX_EXTENDS_DEPTH} files deep "
                           f"({' -> '.join(p.name for p in (*_seen, path))}); flatten the chain"],
                          str(_seen[0]))
    if len(loaded) >= MAX_EXTENDS_FILES:
        raise RecipeError([f"extends: more than {MAX_EXTENDS_FILES} recipe files in all; a recipe "
                           "that extends the same files many times over is refused"], str(_seen[0]))
    loaded.append(path)
    raw = read_recipe_file(path)
    parents = raw.pop("extends", None) or []
    parents = [parents] if isinstance(parents, str) else parents
    if not isinstance(parents, list) or not all(isinstance(x, str) for x in parents):
        raise RecipeError(["extends: expected a file path or a list of file paths, got "
                           f"{raw.get('extends', parents)!r}"], str(path))
    merged: dict[str, Any] = {}
    for parent in parents:
        merged = deep_merge(merged, load_raw(path.parent / parent, (*_seen, path), loaded))
    return extend(merged, raw)


SELECTORS = {"data": "source", "tokenizer": "name", "prior": "name"}


def extend(parent: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge `child` over `parent`, except that a component section naming a different
    component than the parent's replaces it: an LSTM inherits no GPT settings."""
    parent = dict(parent)
    for section, selector in SELECTORS.items():
        mine, theirs = child.get(section), parent.get(section)
        if isinstance(mine, dict) and isinstance(theirs, dict) and selector in mine \
                and mine[selector] != theirs.get(selector):
            parent.pop(section)
    return deep_merge(parent, child)


def deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
