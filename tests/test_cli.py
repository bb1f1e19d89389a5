import json

import pytest

from svilab.cli import main


def test_exact_json_keys_and_values(tmp_path, capsys):
    assert main(["exact", "--json", "--out", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"log_evidence", "exact", "cavi"}
    assert set(out["exact"]) == {"u", "v", "corr"}
    assert set(out["exact"]["u"]) == {"mean", "sd"}
    assert set(out["cavi"]) == {"u", "v", "elbo", "kl", "iterations"}
    assert {"shape", "rate", "mean"} <= set(out["cavi"]["u"])
    assert out["cavi"]["kl"] == pytest.approx(out["log_evidence"] - out["cavi"]["elbo"])
    assert out["log_evidence"] == pytest.approx(-24.689867112868, abs=1e-9)
    for f in ("config.json", "results.json", "exact_vs_cavi.csv", "exact_vs_cavi.md",
              "posterior_exact_vs_cavi.png"):
        assert (tmp_path / f).exists(), f
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["data"] == [3, 4, 3, 9, 10, 3, 2, 3, 3, 2] and "versions" in cfg


def test_exact_with_user_data_and_table(tmp_path, capsys):
    assert main(["exact", "--data", "1,2,3", "--prior-u", "2,1", "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "KL(q || p)" in text and "Run folder" in text


@pytest.mark.parametrize("argv, msg", [
    (["exact", "--data", "1,-2"], "non-negative"),
    (["exact", "--data", "1,2.5"], "integers"),
    (["exact", "--data", ""], "empty"),
    (["exact", "--prior-u", "0,1"], "prior_u shape"),
    (["exact", "--prior-v", "1"], "expected 2"),
])
def test_bad_input_gives_exit_2_and_message(argv, msg, tmp_path, capsys):
    assert main(argv + ["--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert msg in err and "Traceback" not in err


def test_help_on_every_subcommand(capsys):
    from svilab.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name in sub.choices:
        with pytest.raises(SystemExit) as e:
            main([name, "--help"])
        assert e.value.code == 0
        assert "usage" in capsys.readouterr().out
