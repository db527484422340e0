"""A sweep of settings: ``./run_all.sh --sweep cnn.dropout=0.3,0.5 --sweep mobilenet_v2.dense_units=64,128``.

Every combination of the swept values (Hydra's multirun) becomes one run, named from its values
(`sweep_run_name`), with the values laid over the params file as overrides: validated by
`lib.core.config.load_params` exactly as ``--set`` is, with the same messages.
"""

from __future__ import annotations

import itertools
import json
import re

import yaml

from lib.core.overrides import dotted_overrides


def swept_values(sweeps: list[str]) -> dict[str, list]:
    """``["cnn.dropout=0.3,0.5", ...]`` as ``{"cnn.dropout": [0.3, 0.5], ...}``.

    The values are one YAML flow sequence without its brackets, so that a value may itself be a list
    (``evaluation.seeds=[1,2],[3]``); each is read as YAML, as ``--set`` reads its value.
    """
    swept: dict[str, list] = {}
    for item in sweeps:
        name, equals, text = str(item).partition("=")
        name = name.strip()
        if not equals or not name or not text.strip():
            raise ValueError(f"sweep {item!r}: expected NAME=VALUE,VALUE,..., e.g. cnn.dropout=0.3,0.5")
        if name == "run_name":
            raise ValueError(f"sweep {item!r}: a sweep names each of its runs from its values "
                             "(run_name cannot be swept)")
        if name in swept:
            raise ValueError(f"sweep {item!r}: {name} is swept twice")
        try:
            values = yaml.safe_load(f"[{text}]")
        except yaml.YAMLError as error:
            raise ValueError(f"sweep {item!r}: the values are not valid YAML: {error}") from None
        if len({json.dumps(value, sort_keys=True) for value in values}) != len(values):
            raise ValueError(f"sweep {item!r}: a value is repeated")
        swept[name] = values
    return swept


def combinations(swept: dict[str, list]) -> list[dict[str, object]]:
    """Every combination of the swept values, the last setting varying fastest (as nested loops)."""
    return [dict(zip(swept, values)) for values in itertools.product(*swept.values())]


def _word(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return re.sub(r"[^A-Za-z0-9.]+", "_", text).strip("_") or "none"


def sweep_run_name(base: str, combination: dict[str, object]) -> str:
    """The run name of one combination: ``<base>-<name>_<value>-...``, e.g. ``default-cnn.dropout_0.3``
    (characters a run name cannot hold become ``_``)."""
    return "-".join([base, *(f"{name}_{_word(value)}" for name, value in combination.items())])


def sweep_overrides(base_run_name: str, sets: dict | list[str] | None, sweeps: list[str]) -> list[dict[str, object]]:
    """One overrides mapping per run of the sweep: the ``--set`` overrides, the combination's values and its
    run name. A name both set and swept is an error."""
    fixed = dotted_overrides(sets)
    swept = swept_values(sweeps)
    both = sorted(set(fixed) & set(swept))
    if both:
        raise ValueError(f"{', '.join(both)}: both set (--set) and swept (--sweep); keep one")
    base = fixed.get("run_name", base_run_name)
    return [fixed | combination | {"run_name": sweep_run_name(str(base), combination)}
            for combination in combinations(swept)]
