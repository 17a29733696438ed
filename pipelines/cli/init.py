"""`tokar init DATA [-o recipe.yaml] [--force]`: a starter recipe for a user's own data.

Looks at DATA (pipelines/recipe/starter.py says what it reads and why each setting), prints what
it found, and writes the recipe atomically. An existing output is never overwritten without
--force: it may be the user's own edited recipe.

Not here: the inspection and the recipe's settings (pipelines/recipe/starter.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipelines.io.atomic import write_text_atomically
from pipelines.recipe.starter import inspect
from plugins.errors import TokarError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("init", help="look at your data (a text file, a folder of text, images or "
                       "audio, an .npz) and write a starter recipe that trains as it is")
    p.add_argument("data", help="a file or folder")
    p.add_argument("-o", "--output", default="recipe.yaml", help="the recipe to write "
                   "(default: recipe.yaml)")
    p.add_argument("--force", action="store_true", help="overwrite OUTPUT if it exists")
    p.set_defaults(func=cmd_init)


def cmd_init(args: argparse.Namespace) -> int:
    out = Path(args.output)
    if out.exists() and not args.force:
        raise TokarError(f"{out} exists; pass --force to overwrite it, or -o another file.")
    if out.exists() and not out.is_file():
        raise TokarError(f"{out} is not a regular file; choose another output with -o.")
    starter = inspect(args.data)
    for line in starter.found:
        print(line, file=sys.stderr)
    write_text_atomically(out, starter.recipe)
    print(f"wrote {out}: check it with `tokar validate {out}`, train it with `tokar train {out}`",
          file=sys.stderr)
    print(out)
    return 0
