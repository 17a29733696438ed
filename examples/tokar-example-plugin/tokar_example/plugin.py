"""The plugin module named by the `tokar` entry point: one hook per kind of component."""

from plugins import hookimpl


@hookimpl
def tokar_register_tokenizers(register):
    from tokar_example.words import WordTokenizer

    register("words", WordTokenizer)


@hookimpl
def tokar_register_priors(register):
    from tokar_example.mlp import CausalMLP

    register("causal_mlp", CausalMLP)


@hookimpl
def tokar_register_heads(register):
    from tokar_example.laplace import Laplace

    register("laplace", Laplace)


@hookimpl
def tokar_register_sources(register):
    from tokar_example.synthetic import SyntheticText

    register("synthetic_text", SyntheticText)


@hookimpl
def tokar_register_logits_processors(register):
    from tokar_example.no_repeat import no_repeat_ngram

    register("no_repeat_ngram", no_repeat_ngram)
