"""MNIST data, the VAE model/guide, evaluation, training with checkpoints/resume, and the CLI."""

import gzip  # noqa: F401  (torchvision reads the raw files; we write them uncompressed)
import json
import math
import os
import struct
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import TraceMeanField_ELBO

from svilab.cli import main
from svilab.data.mnist import MNISTData, MNISTNotFoundError, as_images, data_root, load_mnist
from svilab.experiments import vae as vae_cmd
from svilab.experiments.common import Reporter
from svilab.experiments.runs import RunFolder
from svilab.inference import vae_eval
from svilab.inference.optim import GuardedAdam
from svilab.inference.svi import DivergenceError
from svilab.inference.vae_training import TrainStep, epoch_batches
from svilab.models.vae import PRESETS, VAE, preset

REAL_ROOT = os.environ.get("SVILAB_DATA")
HAVE_MNIST = bool(REAL_ROOT) and all((Path(REAL_ROOT) / "MNIST" / "raw" / f).exists() for f in
                                     ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte"))
if os.environ.get("SVILAB_REQUIRE_MNIST") == "1" and not HAVE_MNIST:
    raise RuntimeError("SVILAB_REQUIRE_MNIST=1 but the MNIST files are not under $SVILAB_DATA/MNIST/raw")
needs_mnist = pytest.mark.skipif(not HAVE_MNIST, reason="real MNIST not available (set SVILAB_DATA)")


def write_idx(root: Path, n_train: int = 40, n_test: int = 12, seed: int = 0) -> Path:
    """Small MNIST-format files (the IDX layout torchvision reads) with random images."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + labels.tobytes())
    return root


# ----------------------------------------------------------------------------- data
def test_loader_reads_idx_files_and_splits(tmp_path, monkeypatch):
    write_idx(tmp_path)
    monkeypatch.setenv("SVILAB_DATA", str(tmp_path))
    assert data_root() == tmp_path
    d = load_mnist(validation=10, download=False)
    assert d.sizes() == {"train": 30, "validation": 10, "test": 12}
    assert d.train_x.shape == (30, 784) and d.train_x.dtype == torch.float32
    assert 0 <= d.train_x.min() and d.train_x.max() <= 1 and d.train_y.dtype == torch.int64
    # the split is a permutation of the 40 training images: nothing lost, nothing duplicated
    both = torch.cat([d.train_x, d.val_x])
    assert len(torch.unique(both, dim=0)) == 40
    b = load_mnist(tmp_path, binary=True, validation=10, download=False)
    assert set(torch.unique(b.test_x).tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(b.test_x, load_mnist(tmp_path, binary=True, validation=10, download=False).test_x)
    small = load_mnist(tmp_path, validation=10, limit=10, download=False)
    assert small.sizes() == {"train": 10, "validation": 2, "test": 2}


def test_missing_data_names_the_expected_files(tmp_path):
    with pytest.raises(MNISTNotFoundError) as err:
        load_mnist(tmp_path / "nowhere", download=False)
    msg = str(err.value)
    assert "train-images-idx3-ubyte" in msg and "t10k-labels-idx1-ubyte" in msg
    assert str(tmp_path / "nowhere" / "MNIST" / "raw") in msg and "SVILAB_DATA" in msg


@pytest.mark.parametrize("shape", [(5, 28, 27), (5, 783), (5, 3, 28, 28), (784,)])
def test_wrong_image_shape_is_an_error(shape):
    with pytest.raises(ValueError, match="wrong image shape"):
        as_images(torch.rand(shape))


@needs_mnist
def test_real_mnist_loads():
    d = load_mnist(REAL_ROOT, download=False)
    assert d.sizes() == {"train": 50_000, "validation": 10_000, "test": 10_000}
    assert torch.bincount(d.test_y).tolist()[:3] == [980, 1135, 1032]


# ----------------------------------------------------------------------------- model and evaluation
def test_presets_and_overrides():
    assert PRESETS["notebook"].latent_dim == 5 and PRESETS["notebook"].hidden == (20, 20)
    assert PRESETS["standard"].likelihood == "bernoulli" and PRESETS["standard"].latent_dim == 50
    assert preset("notebook", latent_dim=2, hidden=[8]).hidden == (8,)
    with pytest.raises(ValueError, match="unknown preset 'big'"):
        preset("big")
    with pytest.raises(ValueError, match="needs binarized"):
        preset("notebook", likelihood="bernoulli", binarize=False)


@pytest.fixture
def bern_vae():
    torch.manual_seed(0)
    return VAE(preset("standard", latent_dim=4, hidden=[32]))


def test_evaluation_functions_agree(bern_vae):
    torch.manual_seed(1)
    x = (torch.rand(64, 784) < 0.2).float()
    elbo, se = vae_eval.elbo(bern_vae, x, samples=200)
    # the ELBO against Pyro's TraceMeanField_ELBO on the same model/guide (independent code path)
    loss = TraceMeanField_ELBO(num_particles=200, vectorize_particles=True, max_plate_nesting=1)
    pyro_elbo = -loss.loss(bern_vae.model, bern_vae.guide, x) / len(x)
    assert pyro_elbo == pytest.approx(elbo, abs=0.05)
    iw = {k: vae_eval.iwae_log_likelihood(bern_vae, x, k=k, chunk=7)[0] for k in (1, 10, 100)}
    assert iw[1] == pytest.approx(elbo, abs=4 * se + 0.3)       # k = 1 is an unbiased ELBO estimate
    assert elbo < iw[10] < iw[100]                               # the bound grows with k
    assert 0 < vae_eval.reconstruction_error(bern_vae, x) < 784
    assert 0 <= vae_eval.active_units(bern_vae, x) <= 4


class LinearGaussianPair(torch.nn.Module):
    """A user's own pair (not svilab's VAE): z ~ N(0, I_2), x | z ~ N(W z + b, s^2 I_5), W with orthogonal
    columns, and an amortized guide equal to the exact posterior (diagonal because W'W is). Then
    log p(x, z) - log q(z | x) = log p(x) for every z: the ELBO and the IWAE estimate equal the exact
    log p(x) = log N(x; b, W W' + s^2 I) whatever the draws (the IWAE estimate exactly; the ELBO, whose KL
    is in closed form and likelihood term by Monte Carlo, in expectation)."""

    def __init__(self):
        super().__init__()
        self.W = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0], [1.0, 0.0], [0.0, -1.0]], dtype=torch.float64)
        self.b = torch.tensor([0.5, -1.0, 0.0, 2.0, 1.0], dtype=torch.float64)
        self.s = 0.8
        self.post_var = 1.0 / (1.0 + (self.W ** 2).sum(0) / self.s ** 2)

    def model(self, x):
        with pyro.plate("images", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2, dtype=x.dtype), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.W.T + self.b, self.s).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("images", x.shape[0]):
            loc = self.post_var * ((x - self.b) @ self.W) / self.s ** 2
            pyro.sample("z", dist.Normal(loc, self.post_var.sqrt()).to_event(1))


def test_evaluation_on_any_model_guide_pair():
    """elbo(model, guide, x) and iwae_log_likelihood(model, guide, x) on a user's pair: equal to the exact
    log p(x) when the guide is the exact posterior; on svilab's VAE the pair path gives the fast path's
    numbers (same draws); a global latent site is refused by name."""
    pair = LinearGaussianPair()
    torch.manual_seed(2)
    x = torch.randn(30, 5, dtype=torch.float64) * 2
    exact = dist.MultivariateNormal(pair.b, pair.W @ pair.W.T + pair.s ** 2 * torch.eye(5, dtype=torch.float64))
    log_px = float(exact.log_prob(x).mean())
    assert vae_eval.elbo(pair.model, pair.guide, x, samples=4000)[0] == pytest.approx(log_px, abs=0.02)  # MC se 0.005
    assert vae_eval.iwae_log_likelihood(pair.model, pair.guide, x, k=50, chunk=7)[0] == pytest.approx(log_px, abs=1e-9)
    torch.manual_seed(0)
    vae = VAE(preset("notebook", latent_dim=3, hidden=(16,)))
    xs = torch.rand(20, 784)
    for fn, kw in ((vae_eval.elbo, {"samples": 4}), (vae_eval.iwae_log_likelihood, {"k": 40, "chunk": 15})):
        pyro.set_rng_seed(0)
        fast = fn(vae, xs, **kw)[0]
        pyro.set_rng_seed(0)
        assert fn(vae.model, vae.guide, xs, **kw)[0] == pytest.approx(fast, rel=1e-6)

    def global_model(x):
        scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
        with pyro.plate("images", x.shape[0]):
            pyro.sample("x", dist.Normal(0.0, scale[..., None].expand(scale.shape + (5,))).to_event(1), obs=x)

    def global_guide(x):
        pyro.sample("scale", dist.LogNormal(0.0, 0.5))

    with pytest.raises(ValueError, match="site 'scale' is not inside the plate over the images"):
        vae_eval.elbo(global_model, global_guide, x)


class TinyUserVAE(torch.nn.Module):
    """A user's own VAE (not svilab's class): linear encoder and decoder, Gaussian likelihood."""

    def __init__(self, d=5, k=2):
        super().__init__()
        self.enc = torch.nn.Linear(d, 2 * k)
        self.dec = torch.nn.Linear(k, d)
        self.k = k

    def model(self, x):
        pyro.module("dec", self.dec)
        with pyro.plate("images", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.k), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.dec(z), 0.5).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("enc", self.enc)
        loc, raw = self.enc(x).chunk(2, -1)
        with pyro.plate("images", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, torch.nn.functional.softplus(raw) + 1e-3).to_event(1))


@pytest.mark.parametrize("loss", ["elbo", "gjs"])
def test_train_vae_on_a_user_pair(loss):
    """train_vae takes any module with model/guide and a (train_x, val_x) pair, and trains it: the
    learned linear-Gaussian model's exact log p(x) (closed form: N(b, W W' + 0.25 I)) reaches the
    generating model's, and its ELBO (the pair evaluation, 400 draws) sits just below it; GJS trains a
    user's pair too (its objective falls; the ELBO stays below log p(x))."""
    from svilab.inference.jsd_elbo import GeometricJSD_ELBO
    from svilab.inference.vae_training import train_vae

    pair = LinearGaussianPair()
    g = torch.Generator().manual_seed(0)
    z = torch.randn(1200, 2, generator=g, dtype=torch.float64)
    x = (z @ pair.W.T + pair.b + 0.5 * torch.randn(1200, 5, generator=g, dtype=torch.float64)).float()
    exact = dist.MultivariateNormal(pair.b.float(), pair.W.float() @ pair.W.float().T + 0.25 * torch.eye(5))
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    torch.manual_seed(0)
    vae = TinyUserVAE()
    start = vae_eval.elbo(vae.model, vae.guide, x[1000:], samples=20)[0]
    elbo = (GeometricJSD_ELBO(0.5, max_plate_nesting=1) if loss == "gjs"
            else TraceMeanField_ELBO(max_plate_nesting=1))
    result = train_vae(vae, (x[:1000], x[1000:]), elbo, epochs=40, seed=0, lr=0.03, batch_size=100)
    with torch.no_grad():
        W, b = vae.dec.weight, vae.dec.bias
        learned = float(dist.MultivariateNormal(b, W @ W.T + 0.25 * torch.eye(5)).log_prob(x[1000:]).mean())
    truth = float(exact.log_prob(x[1000:]).mean())
    end = vae_eval.elbo(vae.model, vae.guide, x[1000:], samples=400)[0]
    assert len(result.history) == 40 and start < result.history[-1]["val_elbo"]
    assert end < learned + 0.01                       # the ELBO is a lower bound
    if loss == "elbo":                                # maximum likelihood, in effect
        assert learned > truth - 0.1                  # the model learned is as good as the one that made the data
        assert learned - 0.15 < end                   # with a small gap
    else:                                             # GJS trains another objective: it goes down
        assert result.history[-1]["val_loss"] < 0.8 * result.history[0]["val_loss"]
    with pytest.raises(ValueError, match="pair \\(train_x, val_x\\)"):
        train_vae(vae, x, elbo, epochs=1, seed=0, lr=0.01, batch_size=10)


# ----------------------------------------------------------------------------- training
def _args(**kw):
    parser = main.__globals__["build_parser"]()
    argv = ["vae", "train"] + [t for k, v in kw.items() for t in ([f"--{k.replace('_', '-')}"] + (
        [str(x) for x in v] if isinstance(v, list) else [str(v)]))]
    return parser.parse_args(argv)


def _synthetic(n=400, seed=0, binary=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 784, generator=g) ** 3
    y = torch.randint(0, 10, (n,), generator=g)
    return MNISTData(x[:300], y[:300], x[300:350], y[300:350], x[350:], y[350:], binary, "synthetic")


@pytest.mark.parametrize("loss, alpha, extra", [("elbo", None, {}), ("gjs", "learned:0.4", {}),
                                                ("iwae", None, {"k": 3}), ("iwae", None, {"k": 3, "dreg": ""})])
def test_training_lowers_the_loss_and_resume_is_exact(tmp_path, loss, alpha, extra):
    data = _synthetic()
    args = _args(epochs=3, eval_k=5, batch_size=50, **{k: v for k, v in extra.items() if v != ""})
    args.dreg = "dreg" in extra
    cfg = vae_cmd.run_config(args, loss, alpha)
    quiet = Reporter(quiet=True)
    full = vae_cmd.train(cfg, RunFolder("t", tmp_path / "full"), data, quiet)
    h = full.history
    assert h[-1]["train_loss"] < h[0]["train_loss"] and h[-1]["val_elbo"] > h[0]["val_elbo"]

    part_cfg = cfg.with_(epochs=1)
    vae_cmd.train(part_cfg, RunFolder("t", tmp_path / "part"), data, quiet)
    state = torch.load(tmp_path / "part" / vae_cmd.CHECKPOINT, weights_only=False)
    assert state["epoch"] == 0
    resumed = vae_cmd.train(cfg, RunFolder("t", tmp_path / "part", mode="resume"), data, quiet, resume=state)
    for k, v in full.vae.state_dict().items():
        torch.testing.assert_close(resumed.vae.state_dict()[k], v, rtol=0, atol=0)
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in h]
    if cfg.learn_alpha:        # the skew is trained (it moves), recorded per epoch, and resumed exactly
        alphas = [r["gjs_alpha"] for r in h]
        assert alphas[0] != 0.4 and len(set(alphas)) == 3 and all(0 < a < 1 for a in alphas)
        assert [r["gjs_alpha"] for r in resumed.history] == alphas


def test_train_step_skips_non_finite_updates():
    torch.manual_seed(0)
    vae = VAE(preset("notebook", latent_dim=2, hidden=[8]))
    optim = GuardedAdam(vae.parameters(), lr=0.1)
    step = TrainStep(vae, optim, vae_cmd.make_vae_loss("elbo", jit=False))
    x = torch.rand(10, 784)
    step(x)
    after_one = {k: v.clone() for k, v in vae.state_dict().items()}
    with pyro.validation_enabled(False):
        step(x.clone().fill_(float("nan")))
    step(x)                            # finite again, but the guard is sticky: no update after a bad step
    assert optim.diverged and optim.first_bad_step() == 1
    assert math.isfinite(optim.losses()[0]) and math.isnan(optim.losses()[1])
    for k, v in vae.state_dict().items():
        torch.testing.assert_close(v, after_one[k], rtol=0, atol=0)


@pytest.mark.parametrize("jit", [False, True])
def test_nan_loss_stops_training_with_message_and_keeps_checkpoint(tmp_path, monkeypatch, jit):
    data = _synthetic()
    cfg = vae_cmd.run_config(_args(epochs=3, batch_size=50), "gjs", 0.3)
    cfg = cfg.with_(jit=jit)
    real_save = vae_cmd.save_checkpoint

    def save_then_poison(path, state):   # after epoch 1 is saved, one training image turns NaN
        real_save(path, state)
        data.train_x[120] = float("nan")

    monkeypatch.setattr(vae_cmd, "save_checkpoint", save_then_poison)
    perm = epoch_batches(len(data.train_x), 50, cfg.seed, 1)[0]
    bad_step = int((perm == 120).nonzero()[0, 0]) + 1
    with pytest.raises(DivergenceError, match=f"non-finite \\(nan\\) in epoch 2, step {bad_step};"):
        vae_cmd.train(cfg, RunFolder("t", tmp_path), data, Reporter(quiet=True))
    state = torch.load(tmp_path / vae_cmd.CHECKPOINT, weights_only=False)
    assert state["epoch"] == 0 and len(state["history"]) == 1   # the finished epoch is kept
    assert all(torch.isfinite(v).all() for v in state["model"].values())


# ----------------------------------------------------------------------------- CLI
@pytest.mark.parametrize("argv, msg", [
    (["--loss", "kl"], "unknown loss 'kl'; known: elbo, renyi, iwae, gjs, dgjs"),
    (["--loss", "gjs", "--alpha", "1.5"], "alpha must be in [0, 1]"),
    (["--loss", "iwae", "--k", "0"], "--k must be >= 1"),
    (["--loss", "renyi", "--k", "1"], "--k must be >= 2 for renyi"),
    (["--loss", "elbo", "--k", "5"], "--k is the number of importance samples of iwae/renyi; elbo takes none"),
    (["--loss", "iwae", "--particles", "3"], "iwae draws --k samples per image"),
    (["--loss", "iwae", "--alpha", "learned"], "--alpha is the skew of gjs/dgjs or the order of renyi; iwae has"),
    (["--loss", "renyi", "--alpha", "learned"], "--alpha learned trains the skew of gjs/dgjs; renyi has no skew"),
    (["--loss", "renyi", "--alpha", "1"], "the Renyi order must be finite and not 1"),
    (["--loss", "gjs", "--alpha", "learned:1"], "a learned alpha starts inside (0, 1)"),
    (["--loss", "gjs", "--alpha", "learned0.3"], "write learned or learned:START"),
    (["--loss", "gjs", "--alpha", "learnt"], "--alpha must be a number or learned[:START]"),
    (["--loss", "gjs", "--dreg"], "--dreg is the doubly reparameterized gradient of iwae; gjs has none"),
    (["--device", "gpu"], "--device must be one of cpu, cuda, cuda:N, mps, auto; got 'gpu'"),
    (["--preset", "huge"], "unknown preset 'huge'"),
    (["--epochs", "0"], "--epochs must be >= 1"),
])
def test_vae_train_bad_input(argv, msg, tmp_path, capsys):
    write_idx(tmp_path / "data")
    assert main(["vae", "train", "--data-root", str(tmp_path / "data"), "--validation", "5",
                 "--out", str(tmp_path / "run"), *argv]) == 2
    err = capsys.readouterr().err
    assert msg in err and "Traceback" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_a_device_that_is_not_here_is_refused_before_any_folder(tmp_path, capsys):
    write_idx(tmp_path / "data")
    for cmd in (["train"], ["compare"]):
        assert main(["vae", *cmd, "--data-root", str(tmp_path / "data"), "--validation", "5", "--device", "cuda:0",
                     "--out", str(tmp_path / "run")]) == 2
        err = capsys.readouterr().err
        assert "--device cuda:0: this machine has no CUDA device" in err and "Traceback" not in err
        assert not (tmp_path / "run").exists()


def test_vae_missing_data_and_bad_resume(tmp_path, capsys):
    assert main(["vae", "train", "--data-root", str(tmp_path / "empty"), "--out", str(tmp_path / "r")]) == 2
    assert "Expected the four original files" in capsys.readouterr().err
    assert main(["vae", "train", "--resume", str(tmp_path)]) == 2
    assert "no checkpoint.pt there" in capsys.readouterr().err


def test_vae_compare_json_on_small_files(tmp_path, capsys):
    write_idx(tmp_path / "data", n_train=260, n_test=40)
    argv = ["vae", "compare", "--json", "--data-root", str(tmp_path / "data"), "--validation", "40",
            "--epochs", "2", "--eval-k", "20", "--alphas", "0.3", "learned", "--k", "3",
            "--out", str(tmp_path / "cmp")]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert [(r["loss"], r["alpha"], r["learn_alpha"], r["k"]) for r in out["runs"]] == [
        ("elbo", None, False, None), ("iwae", None, False, 3), ("gjs", 0.3, False, None), ("gjs", 0.5, True, None),
        ("dgjs", 0.3, False, None), ("dgjs", 0.5, True, None)]
    learned = [r["alpha_final"] for r in out["runs"] if r["learn_alpha"]]
    assert all(0 < a < 1 and a != 0.5 for a in learned)         # it moved, and stayed inside (0, 1)
    assert all(r["alpha_final"] is None for r in out["runs"] if not r["learn_alpha"])
    for r in out["runs"]:
        assert {"loss", "alpha", "test_elbo", "test_log_likelihood", "reconstruction_error",
                "seconds_per_epoch"} <= set(r)
        assert r["test_log_likelihood"] >= r["test_elbo"] - 4 * (r["test_elbo_se"] + r["test_log_likelihood_se"])
    for f in ("comparison.md", "curves.png", "reconstructions.png", "latents.png", "prior_samples.png",
              "elbo/checkpoint.pt", "gjs-alpha0.3/results.json", "iwae-k3/results.json",
              "dgjs-alpha-learned0.5/config.json"):
        assert (tmp_path / "cmp" / f).exists(), f


@needs_mnist
def test_train_and_resume_on_real_mnist_via_cli(tmp_path, capsys):
    common = ["--limit", "2000", "--eval-k", "50", "--eval-limit", "100", "--json"]
    assert main(["vae", "train", "--epochs", "1", "--out", str(tmp_path / "a"), *common]) == 0
    capsys.readouterr()
    assert main(["vae", "train", "--resume", str(tmp_path / "a"), "--epochs", "2", "--json"]) == 0
    resumed = json.loads(capsys.readouterr().out)["runs"][0]
    assert main(["vae", "train", "--epochs", "2", "--out", str(tmp_path / "b"), *common]) == 0
    straight = json.loads(capsys.readouterr().out)["runs"][0]
    assert resumed["test_elbo"] == pytest.approx(straight["test_elbo"], rel=1e-6)
    h = json.loads((tmp_path / "b" / "results.json").read_text())["history"]
    assert h[1]["val_elbo"] > h[0]["val_elbo"] and math.isfinite(straight["test_log_likelihood"])


def test_a_checkpoint_from_another_device_resumes_here_with_device_and_says_so(tmp_path, capsys):
    """A run trained on a GPU (its checkpoint says so) is refused on a machine without one unless --device names a
    device that is here; with --device cpu it continues from the same weights and says that its draws differ."""
    write_idx(tmp_path / "data", n_train=120, n_test=20)
    run = tmp_path / "run"
    base = ["--data-root", str(tmp_path / "data"), "--validation", "20", "--eval-k", "5", "--batch-size", "20"]
    assert main(["vae", "train", *base, "--epochs", "1", "--loss", "gjs", "--alpha", "learned", "--out", str(run)]) == 0
    capsys.readouterr()
    ckpt = run / vae_cmd.CHECKPOINT
    state = torch.load(ckpt, weights_only=False)
    state["config"]["device"], state["device"] = "cuda", "cuda:0"       # as if written on a GPU
    torch.save(state, ckpt)
    if not torch.cuda.is_available():
        assert main(["vae", "train", "--resume", str(run), "--epochs", "2"]) == 2
        err = capsys.readouterr().err
        assert "the run was trained with --device cuda, which is not here" in err and "--device cpu" in err
    assert main(["vae", "train", "--resume", str(run), "--epochs", "2", "--device", "cpu", "--json"]) == 0
    captured = capsys.readouterr()
    assert "was trained on cuda:0 and continues on cpu" in captured.err
    out = json.loads(captured.out)["runs"][0]
    assert out["epochs"] == 2 and out["device"] == "cpu" and out["learn_alpha"] and 0 < out["alpha_final"] < 1
    # another alpha mode is a conflict, named
    assert main(["vae", "train", "--resume", str(run), "--epochs", "3", "--alpha", "0.5"]) == 2
    assert "--alpha 0.5 (the run has learned:0.5)" in capsys.readouterr().err
