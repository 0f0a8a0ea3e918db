"""Every registered network builds, runs forward and backward, and the registry fails clearly."""
from __future__ import annotations

import re

import pytest
import torch

import minkseg.sparse as ME
from minkseg.nn import ModelError, build_model, count_parameters, get_spec, list_models
from minkseg.nn.table import model_table


def _scene(dimension: int, frames: int = 3, batch: int = 2, seed: int = 0) -> ME.SparseTensor:
    """A few hundred voxels per sample: two planes and a box edge (surfaces, like real scans) plus noise."""
    generator = torch.Generator().manual_seed(seed)
    chunks = []
    for b in range(batch):
        grid = torch.stack(torch.meshgrid(torch.arange(12), torch.arange(12), indexing="ij"), -1).reshape(-1, 2)
        floor = torch.cat([grid, torch.zeros(len(grid), 1, dtype=torch.long)], 1)
        wall = torch.cat([grid[:, :1], torch.zeros(len(grid), 1, dtype=torch.long), grid[:, 1:]], 1)
        noise = torch.randint(0, 12, (60, 3), generator=generator)
        xyz = torch.cat([floor, wall, noise]) + b
        if dimension == 4:
            xyz = torch.cat([torch.cat([xyz, torch.full((len(xyz), 1), t)], 1) for t in range(frames)])
            xyz[:, :3] += xyz[:, 3:] * torch.tensor([1, 0, 0])  # the scene moves along x between frames
        xyz = torch.unique(xyz, dim=0)
        chunks.append(torch.cat([torch.full((len(xyz), 1), b), xyz], 1))
    coordinates = torch.cat(chunks).int()
    features = torch.rand(len(coordinates), 3, generator=generator)
    return ME.SparseTensor(features, coordinates)


@pytest.mark.parametrize("name", list_models())
def test_every_registered_network_runs_forward_and_backward(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, in_channels=3, out_channels=7)
    x = _scene(model.D)
    out = model(x)
    assert out.F.shape == (len(x), 7)
    assert torch.equal(out.C, x.C), "predictions must come back on the input voxels, in their order"
    out.F.square().mean().backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert grads["conv0p1s1.kernel"].abs().sum() > 0 and grads["final.bias"].abs().sum() > 0


def test_four_dimensional_networks_use_the_papers_kernels() -> None:
    st = build_model("STRes16UNet14A", 3, 5)
    assert st.D == 4
    assert st.block1[0].conv1.kernel.shape[0] == 29  # 27 in space x {-1, 0, +1} in time as a cross
    assert st.conv1p1s2.kernel.shape[0] == 8  # [2, 2, 2, 1]: never strides over time
    assert st.conv0p1s1.kernel.shape[0] == 27  # [3, 3, 3, 1]
    tesseract = build_model("STResTesseract16UNet14A", 3, 5)
    assert tesseract.block1[0].conv1.kernel.shape[0] == 81
    x = _scene(4, frames=3)
    assert sorted(torch.unique(x.C[:, 4]).tolist()) == [0, 1, 2]
    out = st(x)
    assert out.C[:, 4].tolist() == x.C[:, 4].tolist()


def test_three_dimensional_res16unet_also_builds_in_4d_as_the_st_network() -> None:
    as_4d = build_model("Res16UNet14A", 3, 5, D=4)
    st = build_model("STRes16UNet14A", 3, 5)
    assert {k: v.shape for k, v in as_4d.state_dict().items()} == {k: v.shape for k, v in st.state_dict().items()}


def test_mink_aliases_and_minkunet_defaults() -> None:
    assert get_spec("Mink16UNet34C") == get_spec("Res16UNet34C")
    res = build_model("Res16UNet34C", 3, 20)
    mink = build_model("MinkUNet34C", 3, 20)
    assert res.conv0p1s1.kernel.shape[0] == 27 and mink.conv0p1s1.kernel.shape[0] == 125
    # everything but the stem is the same network
    assert count_parameters(mink) - count_parameters(res) == (125 - 27) * 3 * 32
    assert build_model("MinkUNet34", 3, 20).spec.planes == mink.spec.planes  # as in ME's examples/minkunet.py


def test_bottleneck_networks_classify_from_the_expanded_width() -> None:
    model = build_model("Res16UNet50", 3, 4)
    assert model.final.kernel.shape == (1024, 4)
    assert model.block8[0].conv3.kernel.shape == (256, 1024)


def test_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(ModelError) as error:
        build_model("Res16UNet35", 3, 20)
    message = str(error.value)
    assert "Res16UNet35" in message and "Res16UNet34C" in message and "STRes16UNet14" in message
    with pytest.raises(ModelError, match="did you mean Res16UNet34C"):
        build_model("res16unet34c", 3, 20)


@pytest.mark.parametrize("kwargs, pattern", [
    ({"D": 5}, "D must be one of"),
    ({"in_channels": 0}, "in_channels and out_channels"),
    ({"bn_momentum": 1.5}, "bn_momentum"),
])
def test_bad_build_arguments_are_model_errors(kwargs: dict, pattern: str) -> None:
    args = {"in_channels": 3, "out_channels": 20, **kwargs}
    with pytest.raises(ModelError, match=pattern):
        build_model("Res16UNet14A", **args)


def test_wrong_input_is_a_model_error() -> None:
    model = build_model("Res16UNet14A", 3, 5)
    with pytest.raises(ModelError, match="4-D"):
        model(_scene(4))


def test_build_arguments_reach_the_layers() -> None:
    model = build_model("Res16UNet14A", 6, 13, conv1_kernel_size=5, bn_momentum=0.05)
    assert model.conv0p1s1.kernel.shape == (125, 6, 32) and model.final.kernel.shape == (96, 13)
    assert model.final.bias.shape == (1, 13)
    assert model.bn0.bn.momentum == 0.05 and model.block1[0].downsample is None
    assert model.block1[0].norm1.bn.momentum == 0.1  # the original never passed bn_momentum into blocks
    assert model.block5[0].downsample[1].bn.momentum == 0.05


def test_same_seed_same_outputs_on_cpu() -> None:
    outputs = []
    for _ in range(2):
        torch.manual_seed(3)
        model = build_model("Res16UNet14A", 3, 5)
        outputs.append(model(_scene(3)).F)
    assert torch.equal(outputs[0], outputs[1])


def test_parameter_table_is_computed_from_the_code() -> None:
    table = model_table(3, 20, names=["Res16UNet34C", "MinkUNet34C", "STRes16UNet14A"])
    rows = {line.split("|")[1].strip(): line for line in table.splitlines()[2:]}
    for name in ("Res16UNet34C", "MinkUNet34C", "STRes16UNet14A"):
        count = int(re.sub(r"[^0-9]", "", rows[name].split("|")[-2]))
        assert count == count_parameters(build_model(name, 3, 20))
    assert "Mink16UNet34C" in rows["Res16UNet34C"]
