import dataclasses
import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from mrisr.simulation import kspace
from mrisr.simulation.degradation import DegradationConfig, degrade
from mrisr.diffusion.latent_ddpm import LatentDiffusionConfig, sample_prior
from mrisr.training.diffmsr_losses import stage1_loss, stage2_loss
from mrisr.errors import CancelledError, InputError
from mrisr.imaging.geometry import Grid
from mrisr.methods import MethodInput, RunSettings
from mrisr.inference.slicewise import default_axes
from mrisr.methods.diffmsr import DiffMSRMethod, truncated_axes
from mrisr.io.model_store import save_model
from mrisr.networks.diffmsr import PRESETS, DiffMSRConfig, DiffMSRNetwork, PriorConfig
from mrisr.networks.plwformer import PLWformerConfig
from mrisr.pipeline import EnhanceOptions, enhance
from mrisr.progress import CancelToken
from mrisr.registry import get_spec

from conftest import make_image, phantom_array



def tiny_config(use_reference: bool = True) -> DiffMSRConfig:
    return DiffMSRConfig(
        prior=PriorConfig(latent_channels=4, features=8, res_blocks=1, downscale=4),
        denoiser_layers=3,
        decoder=PLWformerConfig(channels=8, layers=(1,), heads=2, window=4, catl_blocks=1, prior_dim=16,
                                ffn_expansion=2.0, unshuffle=2, upsampler="subpixel", use_reference=use_reference),
    )


def tiny_network(use_reference: bool = True, seed: int = 0) -> DiffMSRNetwork:
    torch.manual_seed(seed)
    return DiffMSRNetwork(tiny_config(use_reference)).eval()


def kspace_case(shape=(4, 32, 32)) -> tuple[sitk.Image, sitk.Image, sitk.Image]:
    """(HR target, its in-plane k-space ×4 acquisition, a reference of another contrast) at 1 mm."""
    target = make_image(phantom_array(shape, seed=1))
    reference = make_image(300.0 - phantom_array(shape, seed=1))
    return target, degrade(target, DegradationConfig(kspace_factor=4)), reference


def settings(**changes) -> RunSettings:
    return dataclasses.replace(RunSettings(steps=None, start_step=None, patch_size=None, overlap=0.25, device="cpu",
                                           seed=0, batch_size=None), **changes)


def spec(name: str = "diffmsr", **config):
    base = get_spec(name)
    return dataclasses.replace(base, config={**base.config, "register_reference": False, **config})


def method_input(run: RunSettings, with_reference: bool = True) -> MethodInput:
    target, lr, reference = kspace_case()
    grid = Grid.of(target)
    ref = grid.image_from_array(sitk.GetArrayFromImage(reference) / 300.0) if with_reference else None
    lr = Grid.of(lr).image_from_array(sitk.GetArrayFromImage(lr) / 250.0)
    return MethodInput(lr=lr, grid=grid, mask=np.ones(grid.shape, bool), reference=ref, settings=run)


def test_presets_match_the_paper_size_and_the_registry():
    counts = {name: DiffMSRNetwork(config).parameter_counts() for name, config in PRESETS.items()}
    assert abs(counts["paper"]["total"] - 6.8e6) < 0.03 * 6.8e6
    assert 0.5e6 <= counts["cpu"]["total"] <= 1.5e6
    presets = get_spec("diffmsr").config["presets"]
    for name, count in counts.items():
        assert presets[name]["parameters"] == count["total"]
        assert presets[name]["plwformer"] == count["plwformer"]
    noref = get_spec("diffmsr-noref").config["presets"]
    for name, config in PRESETS.items():
        assert noref[name]["parameters"] == DiffMSRNetwork(config.without_reference()).parameter_counts()["total"]


def test_config_round_trips_through_a_model_card_and_rejects_bad_values():
    config = PRESETS["cpu"]
    assert DiffMSRConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(InputError, match="invalid"):
        DiffMSRConfig.from_dict({"prior": {"colour": 3}})
    with pytest.raises(InputError, match="prior_dim"):
        DiffMSRConfig(prior=PriorConfig(latent_channels=8))
    assert tiny_config().pad_multiple == 4


def test_latent_schedule_is_the_short_public_schedule():
    config = LatentDiffusionConfig()
    betas = config.schedule().betas
    assert config.num_train_steps == 4 and betas.numel() == 4
    assert float(betas[0]) == pytest.approx(0.1) and float(betas[-1]) == pytest.approx(0.99)
    assert float(config.schedule().alphas_cumprod[-1]) < 0.005
    with pytest.raises(InputError, match="prediction_type"):
        LatentDiffusionConfig(prediction_type="v")


@pytest.mark.parametrize("prediction_type", ["sample", "epsilon"])
def test_each_slice_prior_depends_only_on_its_own_seed(prediction_type):
    network = tiny_network()
    diffusion = LatentDiffusionConfig(prediction_type=prediction_type)
    condition = torch.randn(3, 16)
    with torch.no_grad():
        batch = sample_prior(network, condition, diffusion, 4, [torch.Generator().manual_seed(s) for s in (7, 8, 9)])
        alone = sample_prior(network, condition[1:2], diffusion, 4, [torch.Generator().manual_seed(8)])
        other = sample_prior(network, condition[1:2], diffusion, 4, [torch.Generator().manual_seed(5)])
    torch.testing.assert_close(batch[1:2], alone)
    assert (other - alone).abs().max() > 1e-4


def count_denoiser_calls(network: DiffMSRNetwork) -> list[int]:
    calls = [0]
    network.denoiser.register_forward_hook(lambda *args: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_training_and_sampling_run_the_same_number_of_latent_steps():
    network = tiny_network()
    calls = count_denoiser_calls(network)
    batch = {k: torch.rand(2, 1, 16, 16) for k in ("target", "condition", "reference")}
    stage2_loss(network, batch, (4, 4), torch.Generator().manual_seed(0))
    assert calls[0] == 4
    with torch.no_grad():
        sample_prior(network, torch.randn(1, 16), LatentDiffusionConfig(), 4, [torch.Generator().manual_seed(0)])
    assert calls[0] == 8


def grads(network: DiffMSRNetwork) -> dict[str, bool]:
    parts = ("prior_extractor", "condition_extractor", "denoiser", "decoder")
    return {p: any(q.grad is not None and q.grad.abs().sum() > 0 for q in getattr(network, p).parameters())
            for p in parts}


def test_stage_losses_train_the_parts_the_paper_names():
    batch = {k: torch.rand(2, 1, 16, 16) for k in ("target", "condition", "reference")}
    network = tiny_network().train()
    loss, parts = stage1_loss(network, batch, (4, 4))
    loss.backward()
    assert set(parts) == {"image", "kspace"} and np.isfinite(float(loss.detach()))
    assert grads(network) == {"prior_extractor": True, "condition_extractor": False, "denoiser": False,
                              "decoder": True}
    network = tiny_network().train()
    loss, parts = stage2_loss(network, batch, (4, 4), torch.Generator().manual_seed(0))
    loss.backward()
    assert set(parts) == {"image", "kspace", "diffusion"}
    expected = parts["image"] + 0.001 * parts["kspace"] + parts["diffusion"]
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)
    assert grads(network) == {"prior_extractor": False, "condition_extractor": True, "denoiser": True,
                              "decoder": True}


def test_slice_axes_and_truncated_axes_of_an_inplane_kspace_acquisition():
    target, lr, _ = kspace_case()
    assert default_axes(lr.GetSpacing(), target.GetSpacing()) == (0,)
    assert truncated_axes(Grid.of(lr), Grid.of(target)) == (1, 2)
    thick = Grid.of(target)
    thick = dataclasses.replace(thick, size=(32, 32, 2), spacing=(1.0, 1.0, 2.0),
                                origin=tuple(np.add(thick.origin, (0, 0, 0.5))))
    assert default_axes(thick.spacing, target.GetSpacing()) == (1, 2)
    assert truncated_axes(Grid.of(lr), dataclasses.replace(Grid.of(target), spacing=(0.9, 1.0, 1.0))) is None


def test_method_output_is_deterministic_batch_independent_and_kspace_consistent():
    method = DiffMSRMethod(spec(), network=tiny_network())
    a = method.run(method_input(settings(seed=3, batch_size=4)), lambda e: None, CancelToken())
    b = method.run(method_input(settings(seed=3, batch_size=1)), lambda e: None, CancelToken())
    c = method.run(method_input(settings(seed=4)), lambda e: None, CancelToken())
    assert a.shape == (4, 32, 32) and a.dtype == np.float32 and np.isfinite(a).all()
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert np.abs(a - c).max() > 1e-5
    lr = torch.from_numpy(sitk.GetArrayFromImage(method_input(settings()).lr)).double()
    mask = kspace.measured_mask((32, 32), (8, 8))
    spectrum = torch.fft.fftn(torch.from_numpy(a).double(), dim=(1, 2), norm="forward")
    np.testing.assert_allclose(spectrum[:, mask].numpy(), kspace.embed_lr_kspace(lr, (32, 32), (1, 2))[:, mask].numpy(),
                               atol=1e-5)


def test_without_kspace_replacement_the_network_output_is_returned():
    network = tiny_network()
    plain = DiffMSRMethod(spec(kspace_replacement=False), network=network)
    consistent = DiffMSRMethod(spec(), network=network)
    a = plain.run(method_input(settings()), lambda e: None, CancelToken())
    b = consistent.run(method_input(settings()), lambda e: None, CancelToken())
    assert np.abs(a - b).max() > 1e-4


def test_reference_rules_and_the_variant_without_reference():
    with pytest.raises(InputError, match="needs a reference"):
        DiffMSRMethod(spec(), network=tiny_network()).run(method_input(settings(), with_reference=False),
                                                          lambda e: None, CancelToken())
    noref = DiffMSRMethod(spec("diffmsr-noref"), network=tiny_network(use_reference=False))
    out = noref.run(method_input(settings(), with_reference=False), lambda e: None, CancelToken())
    assert out.shape == (4, 32, 32)
    with pytest.raises(InputError, match="does not match"):
        DiffMSRMethod(spec("diffmsr-noref"), network=tiny_network()).run(method_input(settings()), lambda e: None,
                                                                         CancelToken())


def test_cancel_stops_between_slice_batches():
    token = CancelToken()

    def progress(event):
        if event.stage == "slices":
            token.cancel()

    with pytest.raises(CancelledError):
        DiffMSRMethod(spec(), network=tiny_network()).run(method_input(settings(batch_size=1)), progress, token)


def install(folder, name: str, network: DiffMSRNetwork, diffusion: LatentDiffusionConfig) -> None:
    card = {"method": "diffmsr", "preset": "tiny", "network": network.config.to_dict(),
            "diffusion": dataclasses.asdict(diffusion)}
    save_model(network.state_dict(), card, folder, name)


def test_pipeline_needs_weights_then_runs_with_installed_ones(tmp_path, monkeypatch):
    monkeypatch.setenv("MRISR_MODELS", str(tmp_path))
    monkeypatch.setattr("mrisr.io.model_store.shipped_folder", lambda: tmp_path / "no_shipped_weights")
    _, lr, reference = kspace_case()
    with pytest.raises(InputError, match="no trained weights"):
        enhance(lr, EnhanceOptions(method="diffmsr"), reference=reference)
    with pytest.raises(InputError, match="needs a reference"):
        enhance(lr, EnhanceOptions(method="diffmsr"))
    with pytest.raises(InputError, match="steps 5 is out of range"):
        enhance(lr, EnhanceOptions(method="diffmsr", steps=5), reference=reference)
    install(tmp_path, "diffmsr_cpu", tiny_network(), LatentDiffusionConfig())
    result = enhance(lr, EnhanceOptions(method="diffmsr", steps=2), reference=reference)
    assert result.image.GetSize() == (32, 32, 4) and np.isfinite(sitk.GetArrayFromImage(result.image)).all()


def test_a_card_trained_with_another_T_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("MRISR_MODELS", str(tmp_path))
    install(tmp_path, "diffmsr_cpu", tiny_network(), LatentDiffusionConfig(num_train_steps=8))
    with pytest.raises(InputError, match="T=8"):
        DiffMSRMethod(spec()).run(method_input(settings()), lambda e: None, CancelToken())
