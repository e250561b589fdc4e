"""Model settings layered from config.pbtxt, rtinfer.json and the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest_helpers import TRITON_CONFIG

from rtinfer.errors import ConfigError
from rtinfer.hardware import usable_cores
from rtinfer.serve import ModelConfig, VersionPolicy, read_model_config


def _folder(tmp_path: Path, pbtxt: str | None = TRITON_CONFIG,
            own: dict[str, object] | None = None) -> Path:
    folder = tmp_path / "m"
    folder.mkdir(parents=True)
    if pbtxt is not None:
        (folder / "config.pbtxt").write_text(pbtxt)
    if own is not None:
        (folder / "rtinfer.json").write_text(json.dumps(own))
    return folder


def test_triton_settings_are_honoured(tmp_path: Path) -> None:
    config = read_model_config(_folder(tmp_path))
    assert config.max_batch_size == 8 and config.dynamic_batching
    assert config.preferred_batch_size == (4, 8) and config.max_queue_delay_us == 100
    assert config.max_queue_size == 3 and config.instances == 3
    assert config.version_policy.select([1, 2, 3, 4]) == [1, 3]
    batching = config.batching()
    assert batching.max_batch_size == 8 and batching.preferred_batch_size == (4, 8)


def test_rtinfer_json_and_then_the_command_line_win(tmp_path: Path) -> None:
    folder = _folder(tmp_path, own={"instances": 1, "version_policy": {"latest": 2},
                                    "max_queue_delay_us": 500})
    config = read_model_config(folder, {"max_queue_delay_us": 0, "threads": None})
    assert config.instances == 1 and config.max_queue_delay_us == 0
    assert config.version_policy.select([1, 2, 3]) == [2, 3]


def test_without_dynamic_batching_each_request_runs_alone(tmp_path: Path) -> None:
    config = read_model_config(_folder(tmp_path, 'name: "m" max_batch_size: 16'))
    assert config.max_batch_size == 16 and config.batching().max_batch_size == 1
    # a max batch size given on the command line turns dynamic batching on
    assert read_model_config(_folder(tmp_path / "b", None), {"max_batch_size": 4}
                             ).batching().max_batch_size == 4


def test_threads_times_instances_fit_the_cores() -> None:
    for instances in (1, 2, 4):
        config = ModelConfig(name="m", instances=instances)
        assert config.thread_budget * instances <= max(usable_cores(), instances)
    assert ModelConfig(name="m", threads=3, instances=2).thread_budget == 3


@pytest.mark.parametrize(("policy", "available", "chosen"), [
    ("latest:2", [1, 2, 5], [2, 5]), ("all", [1, 2], [1, 2]), ("specific:1,3", [1, 2, 3], [1, 3]),
    ({"latest": 1}, [4, 2], [4]), (VersionPolicy(latest=None, specific=(2,)), [1], []),
])
def test_version_policies(policy: object, available: list[int], chosen: list[int]) -> None:
    assert VersionPolicy.parse(policy).select(available) == chosen


@pytest.mark.parametrize(("pbtxt", "own", "message"), [
    ('name: "other"', None, "names the model 'other' but its folder is 'm'"),
    ('platform: "tensorrt_plan"', None, "platform 'tensorrt_plan' is not servable"),
    (None, {"version_policy": "newest"}, "version_policy 'newest' is not understood"),
    (None, {"instances": 0}, "instances must be >= 1"),
    (None, {"batch": 4}, r"unknown model setting\(s\) \['batch'\]"),
    (None, {"max_queue_size": "many"}, "max_queue_size must be a whole number"),
    ("version_policy { specific { versions: [] } }", None, "specific needs version numbers"),
])
def test_bad_settings_name_the_problem(tmp_path: Path, pbtxt: str | None,
                                       own: dict[str, object] | None, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        read_model_config(_folder(tmp_path, pbtxt, own))
