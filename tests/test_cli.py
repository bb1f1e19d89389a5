import json

import pytest

from svilab.cli import main


def test_exact_json_keys_and_values(tmp_path, capsys):
    assert main(["exact", "--json", "--out", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"log_evidence", "exact", "cavi", "quadrature_accuracy", "warnings"}
    assert out["warnings"] == [] and 0 <= out["quadrature_accuracy"] < 1e-12
    assert set(out["exact"]) == {"u", "v", "corr"}
    assert set(out["exact"]["u"]) == {"mean", "sd"}
    assert set(out["cavi"]) == {"u", "v", "elbo", "kl", "iterations", "converged"}
    assert out["cavi"]["converged"] is True
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
    assert {"exact", "elbo", "gradients", "posterior", "seconds"} <= set(out)
    assert out["exact"]["cavi"]["kl"] == pytest.approx(0.872594, abs=1e-6)
    kl = {m["name"]: m["kl"] for m in out["posterior"]["methods"]}
    assert kl["gamma"] == pytest.approx(0.872594, abs=0.005) and kl["flow"] < 0.004 and kl["nuts"] is None
    for sub in ("exact", "elbo", "gradients", "posterior"):
        assert (tmp_path / sub / "results.json").exists()
    assert (tmp_path / "config.json").exists()


def test_posterior_json_keys_and_files(tmp_path, capsys):
    argv = ["posterior", "--json", "--out", str(tmp_path), "--guides", "gamma", "mvn", "--steps", "300",
            "--nuts", "--nuts-samples", "100", "--nuts-warmup", "100", "--chains", "2", "--draws", "1000",
            "--elbo-samples", "20000"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["log_evidence"] == pytest.approx(-24.689867112868, abs=1e-9)
    assert [m["name"] for m in out["methods"]] == ["gamma", "mvn", "nuts"]
    for m in out["methods"]:
        assert {"name", "elbo", "kl", "u", "v", "corr", "seconds"} <= set(m)
        assert set(m["u"]) == {"mean", "sd"} and set(m["v"]) == {"mean", "sd"}
    gamma, mvn, nuts = out["methods"]
    assert nuts["elbo"] is None and nuts["kl"] is None
    assert gamma["kl"] == pytest.approx(out["log_evidence"] - gamma["elbo"])
    assert mvn["kl"] < 0.3 < gamma["kl"] and mvn["corr"] < -0.7 and abs(gamma["corr"]) < 0.1
    # a mean-field guide on a posterior with corr -0.82 is never reported silently
    assert gamma["pareto_k"] > 0.7 and any("Pareto k-hat" in w for w in gamma["warnings"])
    assert "warning: gamma: Pareto k-hat" in captured.err
    for f in ("config.json", "results.json", "comparison.csv", "comparison.md", "summary_gamma.csv",
              "summary_nuts.md", "posterior_joint.png", "posterior_marginals.png", "svi_loss.png", "nuts_trace.png",
              "inference_data/mvn.nc"):
        assert (tmp_path / f).exists(), f
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["svi"]["gamma"] == {"steps": 300, "particles": 16, "lr": 0.02} and cfg["seed"] == 0


@pytest.mark.parametrize("argv, msg", [
    (["--guides", "iaf"], "unknown guide 'iaf'; known: normal, lognormal, gamma, mvn, lowrank, flow"),
    (["--loss", "kl"], "unknown loss 'kl'"),
    (["--loss", "gjs"], "is for the VAE"),
    (["--steps", "0"], "--steps must be >= 1"),
    (["--particles", "0"], "--particles must be >= 1"),
    (["--loss", "renyi", "--particles", "1"], "needs --particles >= 2"),
    (["--chains", "0"], "--chains must be >= 1"),
])
def test_posterior_bad_input(argv, msg, tmp_path, capsys):
    assert main(["posterior", "--out", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err
    assert msg in err and "Traceback" not in err
