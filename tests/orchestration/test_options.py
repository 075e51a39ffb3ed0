"""The builder's options are declared once (``orchestration/_options.py``); the builder's
signature spells the same parameters for type checkers, and these tests keep the two equal."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from coalestra import SnapshotBuilder
from coalestra.orchestration._options import BuilderOptions


def _options() -> list[inspect.Parameter]:
    return list(inspect.signature(SnapshotBuilder).parameters.values())[1:]


def test_the_signature_spells_every_declared_option_in_order() -> None:
    declared = [item.name for item in dataclasses.fields(BuilderOptions)]
    assert [parameter.name for parameter in _options()] == declared


@pytest.mark.parametrize("declared", dataclasses.fields(BuilderOptions), ids=lambda item: item.name)
def test_each_option_has_the_declared_default_type_and_help(
    declared: dataclasses.Field[object],
) -> None:
    parameter = inspect.signature(SnapshotBuilder).parameters[declared.name]
    assert parameter.kind is inspect.Parameter.KEYWORD_ONLY
    assert parameter.default == declared.default
    assert parameter.annotation == declared.type
    assert declared.metadata["help"].strip()
    words = f"{declared.name}: {declared.metadata['help']}".split()
    assert " ".join(words) in " ".join((SnapshotBuilder.__doc__ or "").split())
