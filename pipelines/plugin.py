"""tokar's own data sources, registered through the hooks every third-party plugin uses.

The manager loads this module by name (plugins.manager.BUILTIN_PLUGINS), so `plugins` itself
imports no source.
"""

from __future__ import annotations

from typing import Any

from pipelines.data.audio import FSDDSource, HFAudioSource, WavFolderSource
from pipelines.data.images import BinarizedMNISTSource, FashionMNISTSource
from pipelines.data.sources import DigitsSource, HFSource, Source, TextSource
from pipelines.data.tables import SklearnTableSource
from pipelines.training.distill import TeacherSamplesSource
from plugins.checks import class_problems, config_problems
from plugins.hookspecs import Register, hookimpl


def check_source(component: Any) -> list[str]:
    """What stops `component` from being a data source (empty: nothing)."""
    return class_problems(component, Source, "pipelines.data.sources.Source") or config_problems(component)


@hookimpl
def tokar_register_checks(register: Register) -> None:
    register("source", check_source)


@hookimpl
def tokar_register_sources(register: Register) -> None:
    register("binarized_mnist", BinarizedMNISTSource)
    register("fsdd", FSDDSource)
    register("hf_audio", HFAudioSource)
    register("wav_folder", WavFolderSource)
    register("fashion_mnist", FashionMNISTSource)
    register("text", TextSource)
    register("hf", HFSource)
    register("sklearn_digits", DigitsSource)
    register("sklearn_table", SklearnTableSource)
    register("teacher_samples", TeacherSamplesSource)
