"""Params changed by dotted name: a notebook's ``overrides`` and ``./run_all.sh --set NAME=VALUE``.

`lib.core.config.load_params` lays them over a params file and validates both together.
"""

from __future__ import annotations

import json

import yaml


def nested_overrides(overrides: dict[str, object] | list[str] | None) -> dict:
    """Overrides by dotted name as the nested mapping a params file would hold.

    ``overrides``: a mapping (``{"mobilenet_v2.dropout": 0.4}``, what a notebook's parameters cell takes)
    or a dotlist (``["mobilenet_v2.dropout=0.4"]``, what ``./run_all.sh --set`` takes, values read as YAML:
    ``0.4``, ``true``, ``null``, ``[42, 43]``), as Hydra and OmegaConf read them.
    """
    if not overrides:
        return {}
    if not isinstance(overrides, dict):
        pairs = {}
        for item in overrides:
            name, equals, text = str(item).partition("=")
            if not equals or not name.strip():
                raise ValueError(f"override {item!r}: expected NAME=VALUE, e.g. mobilenet_v2.dropout=0.4")
            try:
                pairs[name.strip()] = yaml.safe_load(text) if text.strip() else None
            except yaml.YAMLError as error:
                raise ValueError(f"override {item!r}: the value is not valid YAML: {error}") from None
        overrides = pairs
    nested: dict = {}
    for name, value in overrides.items():
        *sections, leaf = str(name).split(".")
        if not leaf or not all(sections):
            raise ValueError(f"override {name!r}: expected a dotted name such as mobilenet_v2.dropout")
        target = nested
        for section in sections:
            target = target.setdefault(section, {})
            if not isinstance(target, dict):
                raise ValueError(f"override {name!r} conflicts with another override of {section!r}")
        target[leaf] = value
    return nested


def override_words(overrides: dict[str, object] | list[str] | None) -> list[str]:
    """The overrides as ``name=value`` lines, for a run's record and the report."""
    return [f"{name}={json.dumps(value)}" for name, value in dotted_overrides(overrides).items()]


def dotted_overrides(overrides: dict[str, object] | list[str] | None) -> dict[str, object]:
    """Overrides in either form (`nested_overrides`) as one mapping of dotted name to value."""
    return _dotted(nested_overrides(overrides))


def _dotted(nested: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in nested.items():
        if isinstance(value, dict) and value:
            flat |= _dotted(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def changed_fields(before: dict, after: dict) -> list[str]:
    """The dotted names whose values differ between two params dicts (``Params.study_values``)."""
    old, new = _dotted(before), _dotted(after)
    return sorted(name for name in old.keys() | new.keys() if old.get(name) != new.get(name))


def laid_over(defaults: dict, changes: dict) -> dict:
    """``changes`` laid over ``defaults``, section by section, so a file names only what it changes."""
    merged = dict(defaults)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(defaults.get(key), dict) and defaults[key]:
            merged[key] = laid_over(defaults[key], value)
        else:
            merged[key] = value
    return merged
