"""tokar's own tokenizers, registered through the hooks every third-party plugin uses.

The manager loads this module by name (plugins.manager.BUILTIN_PLUGINS), the way pytest lists
its built-in plugins, so `plugins` itself imports no tokenizer.
"""

from __future__ import annotations

from typing import Any

from plugins.checks import attr_problems, class_problems, config_problems
from plugins.hookspecs import Register, hookimpl
from tokenizers_ar.base import Tokenizer, TokenizerConfig
from tokenizers_ar.bpe import BPETokenizer
from tokenizers_ar.char import CharTokenizer
from tokenizers_ar.mulaw import MuLawTokenizer
from tokenizers_ar.pixel import PixelTokenizer
from tokenizers_ar.real import RealTokenizer, WaveformTokenizer
from tokenizers_ar.vqgan import VQGANTokenizer
from tokenizers_ar.vqvae import VQVAETokenizer


def check_tokenizer(component: Any) -> list[str]:
    """What stops `component` from being a tokenizer tokar can use (empty: nothing)."""
    problems = class_problems(component, Tokenizer, "tokenizers_ar.Tokenizer")
    if problems:
        return problems
    return config_problems(component, TokenizerConfig) + attr_problems(component, {
        "modality": (), "unit": (), "layout_kind": ("seq", "grid")})


@hookimpl
def tokar_register_checks(register: Register) -> None:
    register("tokenizer", check_tokenizer)


@hookimpl
def tokar_register_tokenizers(register: Register) -> None:
    register("bpe", BPETokenizer)
    register("char", CharTokenizer)
    register("mulaw", MuLawTokenizer)
    register("pixel", PixelTokenizer)
    register("real", RealTokenizer)
    register("waveform", WaveformTokenizer)
    register("vqvae", VQVAETokenizer)
    register("vqgan", VQGANTokenizer)
