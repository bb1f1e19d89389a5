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


def test_gradients_json_keys(tmp_path, capsys):
    argv = ["gradients", "--json", "--out", str(tmp_path), "--M", "5", "50", "--reps", "200",
            "--estimators", "score", "reparam", "--no-boxplots"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    names = ("mu_u", "sigma_u", "mu_v", "sigma_v")
    assert set(out["point"]) == set(names)
    assert set(out["exact"]) >= {"elbo", "grad"} and set(out["exact"]["grad"]) == set(names)
    assert len(out["results"]) == 4
    for r in out["results"]:
        assert {"estimator", "M", "mean", "std", "seconds"} <= set(r)
        assert set(r["mean"]) == set(names) and set(r["std"]) == set(names)
        # unbiased within 4.5 standard errors, in the command's own output
        for k in names:
            se = r["std"][k] / 200**0.5
            assert abs(r["mean"][k] - out["exact"]["grad"][k]) < 4.5 * se
    assert (tmp_path / "variance_vs_M.png").exists()
    assert (tmp_path / "gradients_score.md").exists()


def test_elbo_json_and_rerun_reproduces(tmp_path, capsys):
    argv = ["elbo", "--json", "--M", "5", "100", "--reps", "300", "--seed", "7"]
    assert main(argv + ["--out", str(tmp_path / "a")]) == 0
    a = json.loads(capsys.readouterr().out)
    assert main(argv + ["--out", str(tmp_path / "b")]) == 0
    b = json.loads(capsys.readouterr().out)
    assert a["results"] == b["results"]
    assert a["exact"]["elbo"] == pytest.approx(-26.481608946, abs=1e-8)
    assert (tmp_path / "a" / "elbo_boxplot.png").exists()


@pytest.mark.parametrize("argv, msg", [
    (["gradients", "--M", "0"], "M must be >= 1"),
    (["gradients", "--reps", "1"], "--reps must be >= 2"),
    (["gradients", "--estimators", "bogus"], "unknown estimator"),
    (["gradients", "--point", "5,-0.5,1,0.2"], "sigma"),
    (["gradients", "--point", "5,nan,1,0.2"], "finite"),
    (["gradients", "--estimators", "score_loo", "--M", "1"], "M >= 2"),
    (["elbo", "--M", "0"], "M must be >= 1"),
])
def test_gradients_bad_input(argv, msg, tmp_path, capsys):
    assert main(argv + ["--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert msg in err and "Traceback" not in err


def test_demo_runs_every_experiment(tmp_path, capsys):
    assert main(["demo", "--json", "--out", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"exact", "elbo", "gradients", "seconds"} <= set(out)
    assert out["exact"]["cavi"]["kl"] == pytest.approx(0.872594, abs=1e-6)
    for sub in ("exact", "elbo", "gradients"):
        assert (tmp_path / sub / "results.json").exists()
    assert (tmp_path / "config.json").exists()
