"""plans.json: dataclass <-> JSON round trip, validation of hand edits, and the JSON schema."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from autoseg.errors import AutosegError
from autoseg.planning import Plan, load_plan, plan_dataset, plan_from_dict, save_plan
from autoseg.planning.patch import approximate_memory_gb
from autoseg.planning.plan import SCHEMA_VERSION, ConfigurationPlan, FingerprintSummary
from autoseg.planning.synthetic import synthetic_fingerprint

SCHEMA = Path(__file__).resolve().parents[1] / "plans" / "plan.schema.json"


@pytest.fixture(scope="module")
def plan() -> Plan:
    fp = synthetic_fingerprint(
        "901_Sciatic",
        [40, 256, 256],
        [3.0, 0.75, 0.75],
        foreground_extent_mm={"1": [120.0, 10.0, 14.0]},
    )
    return plan_dataset(fp, gpu_memory_gb=8, device="cuda", estimator=approximate_memory_gb)


def test_round_trip(plan, tmp_path):
    d = plan.to_dict()
    assert json.loads(json.dumps(d, allow_nan=False)) == d
    assert plan_from_dict(d) == plan
    path = save_plan(plan, tmp_path / "plans.json")
    assert load_plan(path) == plan
    assert load_plan(tmp_path) == plan  # a folder holding plans.json
    assert list(d)[0] == "schema_version"
    assert set(plan.configurations) == {"2d", "2.5d", "3d_fullres", "crop"}


def _set(d, dotted: str, value):
    """Set ``a.b[1].c`` in a nested dict/list; value ``...`` deletes the key."""
    parts = dotted.replace("]", "").replace("[", ".").split(".")
    # configuration names contain a dot ("2.5d"): re-join it
    if "2" in parts and "5d" in parts:
        i = parts.index("2")
        parts[i : i + 2] = ["2.5d"]
    target = d
    for p in parts[:-1]:
        target = target[int(p)] if isinstance(target, list) else target[p]
    last = parts[-1]
    if value is ...:
        del target[last]
    elif isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("configurations.3d_fullres.patch_size[1]", 190, "patch_size[1]"),
        ("configurations.2d.batch_size", 0, "configurations.2d.batch_size"),
        ("configurations.2d.batch_size", 2.5, "expected an integer"),
        ("normalization.0.scheme", "minmax", "normalization.0.scheme"),
        ("target_spacing", [1.0, 2.0], "target_spacing"),
        ("target_spacing[0]", -1.0, "target_spacing[0]"),
        ("foo", 1, "plan.foo: unknown field"),
        ("schedule", ..., "plan.schedule: missing"),
        ("schedule.epochs", 0, "schedule.epochs"),
        ("schema_version", 2, "schema_version"),
        ("resampling.thick_axis", 5, "resampling.thick_axis"),
        ("configurations.2d.architecture.kernel_sizes[0]", [2, 2], "kernel_sizes"),
        ("configurations.2.5d.architecture.in_channels", 1, "in_channels"),
        ("configurations.2.5d.context_slices", 4, "odd"),
        ("configurations.2d.slice_axis", None, "needs it"),
        ("configurations.3d_fullres.slice_axis", 0, "only a 2D configuration"),
        ("configurations.3d_fullres.architecture.num_classes", 3, "num_classes"),
        ("configurations.crop.crop.localiser", "3d_lowres", "not a configuration of this plan"),
        ("configurations.crop.oversample_foreground", 1.5, "oversample_foreground"),
        ("configurations.4d", {}, "unknown configuration"),
        ("labels.nerve", 3, "labels"),
        ("device.source", "guess", "device.source"),
        ("configurations.2d.loss.name", "dice+focal", "loss.name"),
    ],
)
def test_bad_hand_edit_names_the_field(plan, tmp_path, field, value, message):
    d = copy.deepcopy(plan.to_dict())
    _set(d, field, value)
    path = tmp_path / "plans.json"
    path.write_text(json.dumps(d))
    with pytest.raises(AutosegError) as err:
        load_plan(path)
    text = str(err.value)
    assert message in text
    assert str(path) in text and "Fix:" in text


def test_plan_from_a_newer_version_says_so_before_its_new_fields(plan, tmp_path):
    d = copy.deepcopy(plan.to_dict())
    d["schema_version"] = SCHEMA_VERSION + 1
    d["a_field_of_the_future"] = {"x": 1}
    path = tmp_path / "plans.json"
    path.write_text(json.dumps(d))
    with pytest.raises(AutosegError) as err:
        load_plan(path)
    text = str(err.value)
    assert "newer autoseg" in text and "upgrade autoseg" in text and "unknown field" not in text


def test_valid_hand_edit_is_accepted(plan, tmp_path):
    d = copy.deepcopy(plan.to_dict())
    d["configurations"]["3d_fullres"]["batch_size"] = 3
    d["schedule"]["epochs"] = 50
    d["schedule"]["source"] = "user"
    path = tmp_path / "plans.json"
    path.write_text(json.dumps(d))
    edited = load_plan(path)
    assert edited.configurations["3d_fullres"].batch_size == 3 and edited.schedule.epochs == 50


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(AutosegError, match="no plan here"):
        load_plan(tmp_path / "plans.json")
    bad = tmp_path / "plans.json"
    bad.write_text('{"schema_version": 1,')
    with pytest.raises(AutosegError, match="not valid JSON"):
        load_plan(bad)


def test_derived_properties(plan):
    full = plan.configurations["3d_fullres"]
    assert full.n_stages == len(full.architecture["strides"])
    assert len(full.pools_per_axis) == 3
    assert plan.n_channels == 1 and plan.num_classes == 2 and plan.dim == 3


# ---------------------------------------------------------------- JSON schema


_JSON_TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "null": type(None),
    "integer": int,
    "number": (int, float),
}


def _check(instance, schema, root, where="plan"):
    """A small JSON-schema (2020-12 subset) validator: enough for plan.schema.json."""
    if "$ref" in schema:
        node = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        return _check(instance, node, root, where)
    types = schema.get("type")
    if types is not None:
        types = [types] if isinstance(types, str) else types
        ok = any(
            isinstance(instance, _JSON_TYPES[t])
            and not (t in ("integer", "number") and isinstance(instance, bool))
            for t in types
        )
        assert ok, f"{where}: {instance!r} is not {types}"
    if "const" in schema:
        assert instance == schema["const"], where
    if "enum" in schema:
        assert instance in schema["enum"], f"{where}: {instance!r} not in {schema['enum']}"
    if "pattern" in schema and isinstance(instance, str):
        assert re.search(schema["pattern"], instance), f"{where}: {instance!r} does not match"
    if isinstance(instance, (int, float)) and not isinstance(instance, bool):
        if "minimum" in schema:
            assert instance >= schema["minimum"], where
        if "maximum" in schema:
            assert instance <= schema["maximum"], where
        if "exclusiveMinimum" in schema:
            assert instance > schema["exclusiveMinimum"], where
    if isinstance(instance, list):
        assert len(instance) >= schema.get("minItems", 0), where
        assert len(instance) <= schema.get("maxItems", 10**9), where
        for i, item in enumerate(instance):
            if "items" in schema:
                _check(item, schema["items"], root, f"{where}[{i}]")
    if isinstance(instance, dict):
        for key in schema.get("required", []):
            assert key in instance, f"{where}.{key}: required"
        assert len(instance) >= schema.get("minProperties", 0), where
        props = schema.get("properties", {})
        for key, value in instance.items():
            if "propertyNames" in schema:
                _check(key, schema["propertyNames"], root, f"{where} key")
            if key in props:
                _check(value, props[key], root, f"{where}.{key}")
            else:
                extra = schema.get("additionalProperties", True)
                assert extra is not False, f"{where}.{key}: not in the schema"
                if isinstance(extra, dict):
                    _check(value, extra, root, f"{where}.{key}")


def test_plan_matches_json_schema(plan):
    schema = json.loads(SCHEMA.read_text())
    _check(plan.to_dict(), schema, schema)


def test_schema_lists_every_dataclass_field():
    """The schema and the dataclasses must not drift apart."""
    schema = json.loads(SCHEMA.read_text())
    from dataclasses import fields

    assert set(schema["properties"]) == {f.name for f in fields(Plan)}
    config = schema["$defs"]["configuration"]["properties"]
    assert set(config) == {f.name for f in fields(ConfigurationPlan)}
    fp = schema["properties"]["fingerprint"]["properties"]
    assert set(fp) == {f.name for f in fields(FingerprintSummary)}


def test_schema_checker_can_fail(plan):
    schema = json.loads(SCHEMA.read_text())
    d = copy.deepcopy(plan.to_dict())
    d["configurations"]["2d"]["augmentation"] = "wild"
    with pytest.raises(AssertionError, match="augmentation"):
        _check(d, schema, schema)
