"""Property-based tests: whatever a user types or hands over, the answer is a result or one UserError."""
import string

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shiftaddaug import checkpoint
from shiftaddaug.config import TrainConfig, load_config
from shiftaddaug.errors import UserError

KEYS = sorted(TrainConfig.model_fields)
VALUES = st.one_of(st.text(string.printable, max_size=12), st.integers(-10**6, 10**6).map(str),
                   st.floats(allow_nan=True, allow_infinity=True).map(repr), st.sampled_from(
                       ["true", "no", "null", "[1, 2]", "{a: 1}", "1e-3", "-0", "~", "[shift, add]", "'x'"]))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(KEYS + ["epochz", "lr "]), VALUES), max_size=4))
def test_any_overrides_give_a_config_or_one_user_error(pairs):
    try:
        cfg = load_config(overrides=[f"{k}={v}" for k, v in pairs])
    except UserError as e:
        assert "\n" not in str(e)
    else:
        assert cfg.epochs >= 1 and cfg.lr > 0 and "/" not in cfg.name  # the checks held


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=2000))
def test_any_bytes_as_a_checkpoint_give_one_user_error(tmp_path, data):
    path = tmp_path / "x.pt"
    path.write_bytes(data)
    try:
        checkpoint.load(path)
    except UserError as e:
        assert "\n" not in str(e)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(["format", "kind", "model", "config", "num_classes", "in_chans", "x"]),
                       st.one_of(st.integers(), st.text(max_size=5), st.none(), st.just({}))))
def test_any_plain_dict_as_a_checkpoint_is_accepted_only_when_complete(tmp_path, d):
    torch.save(d, tmp_path / "d.pt")
    try:
        ckpt = checkpoint.load(tmp_path / "d.pt")
    except UserError:
        return
    assert ckpt["format"] == checkpoint.FORMAT_VERSION and ckpt["kind"] in checkpoint.KINDS
