"""Sweep files: one base config and the axes that vary it, expanded to the runs they name.

A sweep file has five top-level keys::

    base:  {recipe: bnn, model: mlp, dataset: fashion-mnist, epochs: 10}   # any config field
    cases: {full: {}, no-bn: {norm: none}, sgd: {optimizer: sgd, lr: 0.1}}  # named sets of overrides
    zip:   {lr: [0.1, 0.01], momentum: [0.9, 0.0]}                          # axes that move together
    grid:  {"rules[*].weight": {W1: "dorefa_w:1", W2: "dorefa_w:2"}}        # cartesian axes
    seeds: [0, 1, 2]                                                        # or a count: 3

A key is a config field (``qnnlab recipes`` lists them), a field of ``model_options``
(``model_options.widths``), or one key of a quantization rule, ``rules[MATCH].KEY``: the last
rule of the base whose ``match`` is MATCH gets KEY set, or a rule ``{match: MATCH, KEY: value}``
is appended. An axis is a list of values (labelled by their text) or a mapping label -> value.
``model_options`` given as a mapping adds to the recipe's own options (dropconnect's mask rate stays).
``zip`` may be a list of such groups. The runs are cases x zip x grid x seeds; each lives in
``OUT/<configuration>/seed<N>``, the configuration named by its labels. A run may start from
another run of the sweep, ``init_from: "{sweep}/float/seed{seed}"`` (or learn from it with
``distill_from``): such runs train after all others.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import re
from pathlib import Path
from typing import Any

import yaml

from qnnlab.run.config import FIELDS, from_dict, load_yaml, recipe_values

TOP_KEYS = ("base", "cases", "zip", "grid", "seeds")
RULE_PATH = re.compile(r"^rules\[([^\]]+)\]\.(\w+)$")
RULE_SETTINGS = ("weight", "input", "grad", "state", "keep")
MAPPING_FIELDS = ("model_options",)
UNSAFE = re.compile(r"[^A-Za-z0-9._=+,-]+")


class SweepError(ValueError):
    """A sweep file that cannot run; the message names the file, the line and what is accepted."""


@dataclasses.dataclass(frozen=True)
class PlannedRun:
    name: str  # folder under the sweep's output, "<configuration>/seed<N>"
    configuration: str
    labels: dict[str, str]  # axis -> label (case, zip and grid axes), without the seed
    seed: int
    config: dict[str, Any]  # the resolved config (qnnlab.run.config.TrainConfig fields)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Axis:
    key: str  # "case" for cases, "zip" for a zip group
    options: list[tuple[str, dict[str, Any]]]  # label, overrides


def _lines(node: yaml.Node, path: tuple = (), out: dict | None = None) -> dict[tuple, int]:
    """Line number (1-based) of every key and list item, by its path of keys and indices."""
    out = {} if out is None else out
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            here = path + (key.value,)
            out[here] = key.start_mark.line + 1
            out.setdefault(here + ("<value>",), value.start_mark.line + 1)
            _lines(value, here, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out[path + (i,)] = item.start_mark.line + 1
            _lines(item, path + (i,), out)
    return out


class _Reader:
    def __init__(self, label: str, text: str) -> None:
        self.label = label
        try:
            self.data = load_yaml(text)
            self.lines = _lines(yaml.compose(text, Loader=yaml.SafeLoader)) if text.strip() else {}
        except yaml.YAMLError as exc:
            raise SweepError(f"{label}: not valid YAML ({exc})") from None

    def fail(self, path: tuple, message: str) -> SweepError:
        line = self.lines.get(path) or next((self.lines[p] for p in _prefixes(path) if p in self.lines), None)
        where = f"{self.label}, line {line}" if line else self.label
        return SweepError(f"{where}: {'.'.join(str(p) for p in path if p != '<value>')}: {message}")


def _prefixes(path: tuple) -> list[tuple]:
    return [path[:i] for i in range(len(path) - 1, 0, -1)]


def _label(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        text = "x".join(_label(v) for v in value)
    elif isinstance(value, dict):
        text = ",".join(f"{k}={_label(v)}" for k, v in value.items())
    else:
        text = str(value)
    return UNSAFE.sub("-", text).strip("-") or "none"


def _short(key: str) -> str:
    match = RULE_PATH.match(key)
    if match:
        return f"{match.group(1).replace('*', 'all')}.{match.group(2)}"
    return key.rpartition(".")[2]


def apply(values: dict[str, Any], key: str, value: Any) -> None:
    """Set ``key`` (a field, ``model_options.X`` or ``rules[MATCH].KEY``) in a recipe's values."""
    rule = RULE_PATH.match(key)
    if rule:
        match, setting = rule.groups()
        rules = copy.deepcopy(values.get("rules") or [])
        target = next((r for r in reversed(rules) if r.get("match", "*") == match), None)
        if target is None:
            target = {"match": match}
            rules.append(target)
        target[setting] = value
        values["rules"] = rules
    elif "." in key:
        field, _, sub = key.partition(".")
        values[field] = {**(values.get(field) or {}), sub: value}
    elif key in MAPPING_FIELDS and isinstance(value, dict):  # over the recipe's own options, not instead
        values[key] = {**(values.get(key) or {}), **value}
    else:
        values[key] = value


def _check_key(reader: _Reader, path: tuple, key: Any) -> str:
    if not isinstance(key, str):
        raise reader.fail(path, f"{key!r} is not a field name")
    rule = RULE_PATH.match(key)
    if rule:
        if rule.group(2) not in RULE_SETTINGS:
            raise reader.fail(path, f"rule key {rule.group(2)!r} is unknown; accepted: {', '.join(RULE_SETTINGS)}")
        return key
    field, dot, _ = key.partition(".")
    if field not in FIELDS:
        raise reader.fail(
            path,
            f"unknown field {field!r}; fields: {', '.join(FIELDS)}, model_options.NAME or "
            f"rules[MATCH].{{{','.join(RULE_SETTINGS)}}}",
        )
    if dot and field not in MAPPING_FIELDS:
        raise reader.fail(path, f"{field} is not a mapping; only {', '.join(MAPPING_FIELDS)} takes .NAME")
    if field == "seed":
        raise reader.fail(path, "set seeds with the top-level 'seeds' key")
    return key


def _overrides(reader: _Reader, path: tuple, mapping: Any) -> dict[str, Any]:
    if mapping is None:
        return {}
    if not isinstance(mapping, dict):
        raise reader.fail(path, f"must be a mapping of field: value, not {type(mapping).__name__}")
    return {_check_key(reader, path + (k,), k): v for k, v in mapping.items()}


def _axis_values(reader: _Reader, path: tuple, values: Any) -> list[tuple[str, Any]]:
    if isinstance(values, dict):
        items = [(str(label), value) for label, value in values.items()]
    elif isinstance(values, list):
        items = [(_label(value), value) for value in values]
    else:
        raise reader.fail(path, "an axis is a list of values or a mapping label: value")
    if not items:
        raise reader.fail(path, "the axis is empty; give at least one value")
    labels = [label for label, _ in items]
    if len(set(labels)) != len(labels):
        raise reader.fail(path, f"two values share a label ({', '.join(labels)}); give the axis as label: value")
    return items


def _axes(reader: _Reader, data: dict[str, Any]) -> list[Axis]:
    axes: list[Axis] = []
    if data.get("cases") is not None:
        cases = data["cases"]
        if not isinstance(cases, dict) or not cases:
            raise reader.fail(("cases",), "must be a non-empty mapping label: {field: value, ...}")
        options = [
            (_label(label), _overrides(reader, ("cases", label), overrides)) for label, overrides in cases.items()
        ]
        axes.append(Axis("case", options))
    groups = data.get("zip")
    groups = [] if groups is None else groups if isinstance(groups, list) else [groups]
    for g, group in enumerate(groups):
        path = ("zip",) if not isinstance(data["zip"], list) else ("zip", g)
        if not isinstance(group, dict) or not group:
            raise reader.fail(path, "a zip group is a non-empty mapping field: [values...]")
        columns = {_check_key(reader, path + (k,), k): _axis_values(reader, path + (k,), v) for k, v in group.items()}
        lengths = {k: len(v) for k, v in columns.items()}
        if len(set(lengths.values())) != 1:
            raise reader.fail(path, f"zipped axes must have equal lengths, not {lengths}")
        named = all(isinstance(v, dict) for v in group.values()) and len({tuple(v) for v in group.values()}) == 1
        options = []
        for row in zip(*columns.values()):  # columns that share their labels share them with the run too
            label = row[0][0] if named else ",".join(f"{_short(k)}={cell[0]}" for k, cell in zip(columns, row))
            options.append((label, {k: cell[1] for k, cell in zip(columns, row)}))
        axes.append(Axis("zip", options))
    grid = data.get("grid") or {}
    if not isinstance(grid, dict):
        raise reader.fail(("grid",), "must be a mapping field: [values...]")
    for key, values in grid.items():
        key = _check_key(reader, ("grid", key), key)
        named = isinstance(values, dict)
        options = [
            (label if named else f"{_short(key)}={label}", {key: value})
            for label, value in _axis_values(reader, ("grid", key), values)
        ]
        axes.append(Axis(key, options))
    return axes


def _seeds(reader: _Reader, seeds: Any) -> list[int]:
    if seeds is None:
        return [0]
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        if seeds < 1:
            raise reader.fail(("seeds",), f"{seeds} seeds: give a count >= 1 or a list of seeds")
        return list(range(seeds))
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)
    ):
        raise reader.fail(("seeds",), "give a count (3) or a non-empty list of non-negative integers ([0, 1, 2])")
    if len(set(seeds)) != len(seeds):
        raise reader.fail(("seeds",), "a seed is listed twice")
    return list(seeds)


def _resolve(
    reader: _Reader, base: dict[str, Any], chosen: list[tuple[tuple, dict[str, Any]]], seed: int = 0
) -> dict[str, Any]:
    """The config of ``base`` (its recipe and fields) with the chosen axis values applied in order;
    an axis that sets ``recipe`` starts the run from that recipe instead, the base fields still applied."""
    recipe = next((o["recipe"] for _, o in reversed(chosen) if "recipe" in o), base["recipe"])
    path = next((p for p, o in reversed(chosen) if "recipe" in o), ("base", "recipe"))
    try:
        values = recipe_values(recipe)
    except ValueError as exc:
        raise reader.fail(path, str(exc)) from None
    for key, value in base.items():
        apply(values, key, value)
    for _, overrides in chosen:
        for key, value in overrides.items():
            apply(values, key, value)
    values["seed"] = seed
    try:
        config = from_dict(values, source="config")
    except ValueError as exc:
        field = re.match(r"config: (\w+)=", str(exc))
        source = [(p, o) for p, o in chosen if field and field.group(1) in o]
        path = source[-1][0] if source else chosen[-1][0] if chosen else ("base",)
        if field and path[0] in ("base", "cases") and (source or path == ("base",)):
            path = path + (field.group(1),)
        raise reader.fail(path, str(exc).removeprefix("config: ")) from None
    return config.to_dict()


def load(path: str | Path) -> tuple[list[PlannedRun], dict[str, Any]]:
    """The runs a sweep file names, each config resolved and checked, and the file's data."""
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"sweep file {path} does not exist" + (" (it is a folder)" if path.is_dir() else ""))
    return parse(path.read_text(), str(path))


def parse(text: str, label: str = "sweep") -> tuple[list[PlannedRun], dict[str, Any]]:
    reader = _Reader(label, text)
    data = reader.data
    if not isinstance(data, dict):
        raise SweepError(f"{label}: a sweep file is a mapping with the keys {', '.join(TOP_KEYS)}")
    for key in data:
        if key not in TOP_KEYS:
            raise reader.fail((key,), f"unknown top-level key; a sweep file has {', '.join(TOP_KEYS)}")
    base = {"recipe": "float", **_overrides(reader, ("base",), data.get("base"))}
    axes = _axes(reader, data)
    seeds = _seeds(reader, data.get("seeds"))
    for axis in axes:  # each value alone first, so an error points at the value's own line
        for label, overrides in axis.options:
            _resolve(reader, base, [(_value_path(axis, label), overrides)])
    runs = []
    for combination in itertools.product(*(axis.options for axis in axes)):
        labels = {axis.key: option[0] for axis, option in zip(axes, combination)}
        configuration = "__".join(_label(option[0]) for option in combination) or "base"
        chosen = [(_value_path(axis, option[0]), option[1]) for axis, option in zip(axes, combination)]
        for seed in seeds:
            config = _resolve(reader, base, chosen, seed)
            runs.append(PlannedRun(f"{configuration}/seed{seed}", configuration, labels, seed, config))
    names = [run.name for run in runs]
    if len(set(names)) != len(names):
        duplicate = next(n for n in names if names.count(n) > 1)
        raise SweepError(f"{label}: two runs would share the folder {duplicate}; give their axes distinct labels")
    return runs, data


def _value_path(axis: Axis, label: str) -> tuple:
    if axis.key == "case":
        return ("cases", label)
    if axis.key == "zip":
        return ("zip",)
    return ("grid", axis.key)
