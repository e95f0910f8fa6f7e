"""Config export / import: contents, exact round trip in JSON and YAML, validation messages."""
import hashlib
import json

import numpy as np
import pytest
import yaml

import execal
from execal.models.impact.config import ConfigError, dump_config, load_config, make_provenance, predict_from_config
from execal.models.impact.fit import Calibrator, result_from_config
from execal.models.impact.simulate import simulate_fills


@pytest.fixture(scope="module")
def fills():
    df, _ = simulate_fills(6_000, params={"binance": {"Y": 0.6, "delta": 0.5},
                                          "okx": {"Y": 0.9, "delta": 0.5},
                                          "coinbase": {"Y": 0.75, "delta": 0.5}},
                           seed=51, outlier_share=0.01)
    return df


@pytest.fixture(scope="module")
def result(fills):
    cal = Calibrator(test_fraction=0.2)
    return cal.bootstrap(result=cal.fit(fills), n=10)


@pytest.fixture(scope="module")
def segmented(fills):
    return Calibrator().fit_segments(fills, by="venue")


def test_config_has_the_documented_layout(result, tmp_path, fills):
    csv = tmp_path / "fills.csv"
    fills.to_csv(csv, index=False)
    prov = make_provenance(csv, filters={"venue": ["binance", "okx", "coinbase"]}, frame=fills)
    cfg = json.loads(dump_config(result, prov, "json"))
    assert cfg["schema_version"] == 1 and cfg["execal_version"] == execal.__version__
    assert cfg["created_at"].endswith("+00:00")
    m = cfg["model"]
    assert m["name"] == "power_law" and "delta" in m["formula"]
    assert m["params"] == result.params
    assert m["std_errors"]["Y"] == result.std_errors["Y"] and m["std_errors"]["h"] is None
    assert m["conf_int"]["delta"] == list(result.conf_int()["delta"])
    assert m["bootstrap"]["n"] == 10 and set(m["bootstrap"]["conf_int"]) == {"Y", "delta"}
    opt = cfg["optimizer"]
    assert opt["method"] == "lm_normal" and opt["loss"] == "soft_l1" and opt["report"]["status"] == result.report.status
    assert opt["report"]["message"] == result.report.message and "active_bounds" in opt["report"]
    data = cfg["data"]
    assert data["sha256"] == hashlib.sha256(csv.read_bytes()).hexdigest()
    assert data["rows"] == len(fills) and data["rows_used"] == len(fills)
    assert data["start"].startswith("2024-01-0") and data["filters"] == {"venue": ["binance", "okx", "coinbase"]}
    assert cfg["metrics"]["in_sample"]["n"] == result.n_train
    assert cfg["metrics"]["out_of_sample"]["n"] == len(fills) - result.n_train
    assert cfg["segments"] == []


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_round_trip_reproduces_identical_predictions(result, fills, tmp_path, suffix):
    path = tmp_path / f"impact{suffix}"
    dump_config(result, None, path)
    cfg = load_config(path)
    assert cfg["model"]["params"] == result.params          # exact floats
    np.testing.assert_array_equal(predict_from_config(cfg, fills), result.predict(fills))
    np.testing.assert_array_equal(predict_from_config(path, fills), result.predict(fills))
    again = result_from_config(path, fills)
    assert again.status == "fixed"
    np.testing.assert_array_equal(again.predicted_bps, result.predict(fills))


def test_segmented_round_trip(segmented, fills, tmp_path):
    path = tmp_path / "segments.yaml"
    dump_config(segmented, None, path)
    cfg = load_config(path)
    assert [s["key"] for s in cfg["segments"]] == [dict(s.key) for s in segmented.segments]
    for s, raw in zip(segmented.segments, cfg["segments"]):
        assert raw["params"] == s.result.params and raw["metrics"]["in_sample"]["n"] == s.result.features.n
    assert cfg["segment_test"]["wald"]["p_value"] == segmented.test["wald"]["p_value"]
    want = segmented.predict(fills)
    np.testing.assert_array_equal(predict_from_config(cfg, fills), want)
    okx = (fills["venue"] == "okx").to_numpy()
    np.testing.assert_array_equal(want[okx], segmented.segment(venue="okx").predict(fills)[okx])
    # pooled parameters when segments are ignored
    np.testing.assert_array_equal(predict_from_config(cfg, fills, segments=False),
                                  segmented.pooled.predict(fills))


def _good(result) -> dict:
    return json.loads(dump_config(result, None, "json"))


@pytest.mark.parametrize("mutate,key,expected", [
    (lambda c: c.pop("model"), "model", "a mapping"),
    (lambda c: c["model"].update(name="cubic"), "model.name", "one of sqrt, power_law"),
    (lambda c: c["model"]["params"].update(delta="half"), "model.params.delta", "a finite number"),
    (lambda c: c["model"]["params"].pop("Y"), "model.params", "missing Y"),
    (lambda c: c["model"]["params"].update(gamma=1.0), "model.params", "gamma"),
    (lambda c: c.update(schema_version=99), "schema_version", "one of 1"),
    (lambda c: c.update(schema_version="1"), "schema_version", "an integer"),
    (lambda c: c["model"].update(participation="weekly"), "model.participation", "'adv' or 'horizon'"),
    (lambda c: c.update(segments={"venue": "x"}), "segments", "a list"),
    (lambda c: c.update(segments=[{"key": {"desk": "a"}, "params": {}}]), "segments[0].key", "venue"),
    (lambda c: c.update(created_at="yesterday"), "created_at", "ISO-8601"),
])
def test_validation_names_the_key_and_the_expectation(result, mutate, key, expected):
    cfg = _good(result)
    mutate(cfg)
    with pytest.raises(ConfigError) as err:
        load_config(json.dumps(cfg))
    message = str(err.value)
    assert f"'{key}'" in message and expected in message, message


def test_unreadable_files_are_clear(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml.*not valid JSON or YAML at line"):
        load_config(bad)
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.json")
    with pytest.raises(ConfigError, match="top level"):
        load_config(yaml.safe_dump([1, 2]))
    with pytest.raises(ConfigError, match="format"):
        dump_config({"schema_version": 1}, None, tmp_path / "out.txt")
