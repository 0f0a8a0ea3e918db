"""TS-CRF: mean field lowers the free energy it minimises, smooths noisy labels, and wraps any network."""
from __future__ import annotations

import pytest
import torch

import minkseg.sparse as ME
from minkseg.nn import CRFWrapper, MeanFieldCRF, ModelError, build_model, wrap_with_crf


def _toy_scene(temporal: bool, seed: int = 0, size: int = 10):
    """A size x size x 2 slab (x 3 frames when temporal): red left half is class 0, blue right half class 1.

    The unary prefers the true class by 1 logit, with noise that flips about a quarter of the points.
    """
    generator = torch.Generator().manual_seed(seed)
    grid = torch.stack(torch.meshgrid(torch.arange(size), torch.arange(size), torch.arange(2), indexing="ij"), -1)
    xyz = grid.reshape(-1, 3)
    if temporal:
        xyz = torch.cat([torch.cat([xyz, torch.full((len(xyz), 1), t)], 1) for t in range(3)])
    coordinates = torch.cat([torch.zeros(len(xyz), 1, dtype=torch.long), xyz], 1).int()
    truth = (xyz[:, 0] >= size // 2).long()
    colors = torch.where(truth[:, None] == 0, torch.tensor([200.0, 30.0, 30.0]), torch.tensor([30.0, 30.0, 200.0]))
    colors = colors + torch.randint(-5, 6, colors.shape, generator=generator)
    unary = torch.nn.functional.one_hot(truth, 2).float() + 1.5 * torch.randn(len(xyz), 2, generator=generator)
    return unary, coordinates, colors, truth


def _random_psd_kernel(crf: MeanFieldCRF, seed: int) -> None:
    """Symmetric (W_-o = W_o^T) with a dominant centre, hence positive semidefinite as an operator."""
    generator = torch.Generator().manual_seed(seed)
    offsets = [tuple(o) for o in crf.conv.kernel_offsets.tolist()]
    c = crf.num_classes
    weights = {}
    for o in offsets:
        if any(o) and o not in weights:
            w = 0.2 * torch.randn(c, c, generator=generator)
            weights[o], weights[tuple(-v for v in o)] = w, w.T.clone()
    bound = sum(torch.linalg.matrix_norm(w, 2) for w in weights.values())
    with torch.no_grad():
        for row, o in enumerate(offsets):
            crf.conv.kernel[row] = weights[o] if any(o) else bound * torch.eye(c)


@pytest.mark.parametrize("temporal", [True, False], ids=["TS-CRF 7D", "bilateral 6D"])
@pytest.mark.parametrize("kernel", ["potts-init", "random-psd"])
@pytest.mark.parametrize("spatial_sigma", [1.0, 2.0], ids=["one-point-per-cell", "shared-cells"])
def test_mean_field_lowers_the_free_energy_every_iteration(temporal, kernel, spatial_sigma) -> None:
    unary, coordinates, colors, _ = _toy_scene(temporal)
    if not temporal:
        coordinates = coordinates[:, :4]
    crf = MeanFieldCRF(2, iterations=10, spatial_sigma=spatial_sigma, temporal=temporal)
    if kernel == "random-psd":
        _random_psd_kernel(crf, seed=1)
    with torch.no_grad():
        _, marginals = crf(unary, coordinates, colors, return_marginals=True)
        energies = torch.stack([crf.free_energy(unary, q, coordinates, colors) for q in marginals])
    steps = energies[1:] - energies[:-1]
    assert (steps <= 1e-4 * energies.abs().max()).all(), energies.tolist()
    assert energies[-1] < energies[0] - 1.0, energies.tolist()


def test_crf_corrects_noisy_labels_on_a_coherent_scene() -> None:
    unary, coordinates, colors, truth = _toy_scene(temporal=True)
    crf = MeanFieldCRF(2, iterations=10, temporal=True)
    crf.reset_parameters(weight=0.5, centre_weight=0.0)  # a pure smoothing Potts kernel
    with torch.no_grad():
        refined = crf(unary, coordinates, colors)
    before = (unary.argmax(1) == truth).float().mean()
    after = (refined.argmax(1) == truth).float().mean()
    assert before < 0.85 and after > before + 0.1, (before, after)


def test_crf_is_trainable_and_validates_its_inputs() -> None:
    unary, coordinates, colors, _ = _toy_scene(temporal=True)
    crf = MeanFieldCRF(2, iterations=3, temporal=True)
    assert crf.conv.kernel.shape == (15, 2, 2)  # 7-D cross: centre + 2 per axis
    logits = unary.clone().requires_grad_(True)
    crf(logits, coordinates, colors).square().sum().backward()
    assert crf.conv.kernel.grad.abs().sum() > 0 and logits.grad.abs().sum() > 0
    with pytest.raises(ModelError, match="coordinates"):
        crf(unary, coordinates[:, :4], colors)
    with pytest.raises(ModelError, match="colours"):
        crf(unary, coordinates, colors[:, :2])
    with pytest.raises(ModelError, match="sigmas"):
        MeanFieldCRF(2, spatial_sigma=0)


@pytest.mark.parametrize("name, dimension", [("Res16UNet14A", 3), ("STRes16UNet14A", 4)])
def test_wrapper_refines_any_network(name, dimension) -> None:
    torch.manual_seed(0)
    _, coordinates, colors, _ = _toy_scene(temporal=dimension == 4, size=34)  # 3x3 cells at stride 16
    coordinates = coordinates[:, :1 + dimension]
    x = ME.SparseTensor(colors / 255.0 - 0.5, coordinates)
    wrapped = wrap_with_crf(build_model(name, 3, 4), iterations=2)
    assert wrapped.crf.temporal == (dimension == 4)
    wrapped.eval()
    out = wrapped(x, colors)
    plain = wrapped.model(x)
    assert out.F.shape == (len(x), 4) and not torch.allclose(out.F, plain.F)
    wrapped.train()
    wrapped(x, colors).F.sum().backward()
    never = CRFWrapper(wrapped.model, wrapped.crf, train_probability=0.0).train()
    assert torch.equal(never(x, colors).F, never.model(x).F)
