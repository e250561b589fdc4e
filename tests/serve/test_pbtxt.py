"""Reading config.pbtxt: what Triton's model configs use, and clear errors for the rest."""

from __future__ import annotations

import pytest
from conftest_helpers import TRITON_CONFIG

from rtinfer.deploy.pbtxt import first, parse
from rtinfer.errors import ConfigError


def test_fields_messages_lists_and_repeats() -> None:
    msg = parse(TRITON_CONFIG)
    assert first(msg, "name") == "m" and first(msg, "max_batch_size") == 8
    assert [first(g, "count") for g in msg["instance_group"]] == [2, 1]
    batching = first(msg, "dynamic_batching")
    assert batching["preferred_batch_size"] == [4, 8]
    assert first(first(batching, "default_queue_policy"), "max_queue_size") == 3
    assert first(first(msg, "input"), "data_type") == "TYPE_FP32"
    assert first(msg, "absent", "default") == "default"


@pytest.mark.parametrize(("text", "message"), [
    ('name: "m', "a string is not closed"),
    ("dynamic_batching { max_queue_delay_microseconds: 1", "a message is not closed"),
    ("dims: [ 1, 2", "a list is not closed"),
    ("max_batch_size:", "field 'max_batch_size' has no value"),
    ("} name: 1", "expected a field name, found '}'"),
])
def test_malformed_text_names_the_problem(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse(text)
