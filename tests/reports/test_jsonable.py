"""The one JSON conversion of results: numpy values as Python numbers and lists, NaN and infinities as
null, anything else refused (never written as a string that looks like a value)."""

import json
import math
from enum import StrEnum
from pathlib import Path

import numpy as np
import pytest
import torch

from auditsvc.reports.jsonable import to_jsonable


class Level(StrEnum):
    HIGH = "high"


def test_numpy_and_torch_values_become_plain_json():
    value = {"accuracy": np.float32(0.5), "count": np.int64(3), "ok": np.bool_(True), "level": Level.HIGH,
             "rates": np.array([[0.25, np.nan], [np.inf, 1.0]]), "pair": (1, -math.inf), np.int64(7): "key",
             "tensor": torch.tensor([1.5, 2.5]), "scalar": torch.tensor(2)}
    plain = to_jsonable(value)
    assert plain == {"accuracy": 0.5, "count": 3, "ok": True, "level": "high", "rates": [[0.25, None], [None, 1.0]],
                     "pair": [1, None], 7: "key", "tensor": [1.5, 2.5], "scalar": 2}
    assert type(plain["count"]) is int and type(plain["level"]) is str and type(plain["ok"]) is bool
    assert json.loads(json.dumps(plain, allow_nan=False))["rates"] == [[0.25, None], [None, 1.0]]


@pytest.mark.parametrize("value", [Path("/etc"), {1, 2}, object(), b"bytes", {"nested": [complex(1, 2)]},
                                   {(1, 2): "tuple key"}])
def test_what_json_has_no_value_for_is_refused(value):
    with pytest.raises(TypeError):
        to_jsonable(value)
