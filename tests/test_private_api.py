"""Every private Pyro and torch API svilab uses, checked to exist with the shape svilab relies on, so
that an upgrade that changes one fails here, by name, instead of deep inside a run. Checked against
Pyro 1.9.2 and torch 2.14.1 (docs/architecture.md lists why each is used)."""

from __future__ import annotations

import inspect

import pyro
import pyro.distributions as dist
import pyro.infer
import pyro.ops.jit
import torch
from pyro.infer.autoguide import AutoContinuous, AutoGuide


def test_torch_kernels_guarded_adam_calls():
    """svilab/inference/optim.py: the fused Adam kernel with found_inf, the AMP non-finite check and
    the foreach ops (one fused update per step, no sync)."""
    p = torch.ones(3, requires_grad=True)
    p.grad = torch.full((3,), 0.5)
    found, one = torch.zeros(()), torch.ones(())
    torch._amp_foreach_non_finite_check_and_unscale_([p.grad], found, one)
    assert float(found) == 0.0
    steps = [torch.zeros(())]
    torch._foreach_add_(steps, 1)
    torch._foreach_clamp_min_([p.grad], -10.0)
    torch._foreach_clamp_max_([p.grad], 10.0)
    with torch.no_grad():
        torch._fused_adam_([p], [p.grad], [torch.zeros(3)], [torch.zeros(3)], [], steps, lr=0.1, beta1=0.9,
                           beta2=0.999, weight_decay=0.0, eps=1e-8, amsgrad=False, maximize=False, grad_scale=None,
                           found_inf=found)
    assert torch.allclose(p.detach(), torch.full((3,), 0.9))      # Adam's first step moves by lr
    torch._foreach_sub_(steps, [found])
    assert torch._C._get_tracing_state() is None                  # svilab/inference/jsd_elbo.py


def test_pyro_jit_internals_jit_elbo_reads():
    """svilab/inference/jit_elbo.py: where Pyro's JIT ELBOs keep their compiled function, and the
    compiled function's graphs and parameter names."""
    assert hasattr(pyro.infer.JitTraceMeanField_ELBO, "differentiable_loss")
    src = inspect.getsource(pyro.infer.JitTraceMeanField_ELBO)
    assert "_differentiable_loss" in src
    assert "_loss_and_surrogate_loss" in inspect.getsource(pyro.infer.JitTrace_ELBO)
    fn = pyro.ops.jit.CompiledFunction(lambda x: x + 1, ignore_warnings=True)
    assert hasattr(fn, "compiled") and hasattr(fn, "_param_names")


def test_pyro_guide_and_mcmc_internals():
    """svilab/guides/mean_field.py overrides AutoGuide._setup_prototype; svilab/guides/flow.py calls
    AutoContinuous._init_loc; svilab/guides/lowrank.py replays AutoLowRankMultivariateNormal._setup_prototype
    (its attributes checked here; its parameters against Pyro's in tests/test_guides_scale.py);
    svilab/inference/summaries.py reads MCMC._args/_kwargs; svilab/inference/init.py marks values with
    _pyro_custom_init as Pyro's init strategies do."""
    assert callable(AutoGuide._setup_prototype) and callable(AutoContinuous._init_loc)
    lowrank = inspect.getsource(pyro.infer.autoguide.AutoLowRankMultivariateNormal._setup_prototype)
    assert all(a in lowrank for a in ("self.loc", "self.scale", "self.cov_factor", "_init_scale", "scale_constraint"))
    assert "_pyro_custom_init" in inspect.getsource(pyro.infer.autoguide.initialization)

    def model():
        pyro.sample("x", dist.Normal(0.0, 1.0))

    mcmc = pyro.infer.MCMC(pyro.infer.NUTS(model), num_samples=2, warmup_steps=2, disable_progbar=True)
    mcmc.run()
    assert mcmc._args == () and mcmc._kwargs == {}


def test_nuts_base_tree_and_masked_distribution_internals():
    """svilab/inference/mcmc.py overrides NUTS._build_basetree (one leapfrog step per call) to count gradients;
    svilab/inference/iwae_elbo.py rebuilds a MaskedDistribution from its base and ``_mask`` for DReG."""
    from pyro.distributions.torch_distribution import MaskedDistribution
    from pyro.infer.mcmc import NUTS

    params = list(inspect.signature(NUTS._build_basetree).parameters)
    assert params[:3] == ["self", "z", "r"]
    masked = dist.Normal(torch.zeros(3), 1.0).mask(torch.tensor([True, False, True]))
    assert isinstance(masked, MaskedDistribution) and torch.equal(masked._mask, torch.tensor([True, False, True]))


def test_hmc_adapter_and_neutra_internals():
    """svilab/inference/mcmc.py sets the starting dense mass matrix in HMC._initialize_adapter and searches the
    first step size again through HMC._adapter.reset_step_size_adaptation(HMC._initial_params);
    svilab/inference/neutra.py replaces NeuTraReparam.guide, whose apply() takes the transform from
    guide.get_transform() and adds its log-Jacobian to the first site's density as it comes."""
    from pyro.infer.mcmc import HMC
    from pyro.infer.mcmc.adaptation import WarmupAdapter
    from pyro.infer.reparam import NeuTraReparam

    src = inspect.getsource(HMC._initialize_adapter)
    assert "self._adapter.configure" in src and "reset_step_size_adaptation(self._initial_params)" in src
    assert callable(WarmupAdapter.reset_step_size_adaptation) and hasattr(WarmupAdapter, "mass_matrix_adapter")
    apply = inspect.getsource(NeuTraReparam.apply)
    assert "self.guide.get_transform()" in apply and "log_abs_det_jacobian" in apply
    assert "self.guide._unpack_latent" in inspect.getsource(NeuTraReparam.transform_sample)
