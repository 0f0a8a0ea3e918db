"""Original-checkpoint import: key layout, kernel-row order, and clear errors.

The expected layout is generated here from the architecture as the issue describes it (original names, widths,
kernel volumes), not from our modules, and the expected offset orders are written out by hand, so a mistake in
the package cannot be mirrored by the test.
"""
from __future__ import annotations

import itertools

import pytest
import torch

import minkseg.sparse as ME
from minkseg.nn import CheckpointError, build_model, load_original_checkpoint, to_original_order

# MinkowskiEngine's HYBRID expansion of a 3x3x3 cube (centre; x: -1, +1; then y for each listed offset;
# then z for each listed offset), enumerated by hand.
HYBRID_333 = [
    (0, 0, 0), (-1, 0, 0), (1, 0, 0),
    (0, -1, 0), (0, 1, 0), (-1, -1, 0), (-1, 1, 0), (1, -1, 0), (1, 1, 0),
    (0, 0, -1), (0, 0, 1), (-1, 0, -1), (-1, 0, 1), (1, 0, -1), (1, 0, 1),
    (0, -1, -1), (0, -1, 1), (0, 1, -1), (0, 1, 1),
    (-1, -1, -1), (-1, -1, 1), (-1, 1, -1), (-1, 1, 1),
    (1, -1, -1), (1, -1, 1), (1, 1, -1), (1, 1, 1),
]
# 4-D block convs: the same 27 in space at t = 0, then the time cross arm (-1, +1).
HYBRID_4D = [o + (0,) for o in HYBRID_333] + [(0, 0, 0, -1), (0, 0, 0, 1)]


def cube_order(sizes: tuple[int, ...]) -> list[tuple[int, ...]]:
    """HYPER_CUBE order: first axis fastest; odd sizes centred, even sizes 0..k-1."""
    axes = [range(-(k // 2), k // 2 + 1) if k % 2 else range(k) for k in sizes]
    return [tuple(reversed(p)) for p in itertools.product(*reversed(axes))]


def original_layout(in_channels: int, out_channels: int, layers, planes, stem_kernel: int = 3, D: int = 3,
                    block_volume: int = 27) -> dict[str, tuple[int, ...]]:
    """Key -> shape of an original Res16UNet (BasicBlock) state dict, from the architecture description."""
    keys: dict[str, tuple[int, ...]] = {}
    down_volume = 8  # kernel 2 on the three spatial axes (time size 1 in 4-D)

    def conv(name, volume, cin, cout):
        keys[f"{name}.kernel"] = (volume, cin, cout) if volume > 1 else (cin, cout)

    def bn(name, channels):
        for field in ("weight", "bias", "running_mean", "running_var"):
            keys[f"{name}.bn.{field}"] = (channels,)
        keys[f"{name}.bn.num_batches_tracked"] = ()

    def stage(prefix, inplanes, width, count):
        for index in range(count):
            cin = inplanes if index == 0 else width
            conv(f"{prefix}.{index}.conv1", block_volume, cin, width)
            bn(f"{prefix}.{index}.norm1", width)
            conv(f"{prefix}.{index}.conv2", block_volume, width, width)
            bn(f"{prefix}.{index}.norm2", width)
            if index == 0 and cin != width:
                conv(f"{prefix}.{index}.downsample.0", 1, cin, width)
                bn(f"{prefix}.{index}.downsample.1", width)
        return width

    conv("conv0p1s1", stem_kernel ** 3, in_channels, 32)
    bn("bn0", 32)
    width = 32
    for level, name in enumerate(["conv1p1s2", "conv2p2s2", "conv3p4s2", "conv4p8s2"]):
        conv(name, down_volume, width, width)
        bn(f"bn{level + 1}", width)
        width = stage(f"block{level + 1}", width, planes[level], layers[level])
    skips = [planes[2], planes[1], planes[0], 32]
    for level, name in enumerate(["convtr4p16s2", "convtr5p8s2", "convtr6p4s2", "convtr7p2s2"]):
        up = planes[4 + level]
        conv(name, down_volume, width, up)
        bn(f"bntr{4 + level}", up)
        width = stage(f"block{5 + level}", up + skips[level], up, layers[4 + level])
    conv("final", 1, width, out_channels)
    keys["final.bias"] = (1, out_channels)
    return keys


L34, P34C = (2, 3, 4, 6, 2, 2, 2, 2), (32, 64, 128, 256, 256, 128, 96, 96)
L14, P14A = (1,) * 8, (32, 64, 128, 256, 128, 128, 96, 96)


def random_state(layout: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in layout.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(17)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=generator) + 0.5
        else:
            state[key] = torch.randn(shape, generator=generator)
    return state


CASES = [
    # (file arch name, layout args, expected D, block-conv order in the file)
    ("Mink16UNet34C", dict(layers=L34, planes=P34C, stem_kernel=3), 3, HYBRID_333),
    ("Res16UNet34C", dict(layers=L34, planes=P34C, stem_kernel=5), 3, HYBRID_333),
    ("Mink16UNet18", dict(layers=(2,) * 8, planes=(32, 64, 128, 256) + (256,) * 4, stem_kernel=5), 3, HYBRID_333),
    ("MinkUNet34C", dict(layers=L34, planes=P34C, stem_kernel=5), 3, cube_order((3, 3, 3))),
    ("STRes16UNet14A", dict(layers=L14, planes=P14A, D=4, block_volume=29), 4, HYBRID_4D),
    ("STResTesseract16UNet14A", dict(layers=L14, planes=P14A, D=4, block_volume=81), 4, cube_order((3, 3, 3, 3))),
]


@pytest.mark.parametrize("arch, layout_args, dimension, block_order", CASES, ids=[c[0] for c in CASES])
def test_original_layout_loads_strictly_with_rows_in_place(tmp_path, arch, layout_args, dimension,
                                                           block_order) -> None:
    layout = original_layout(3, 20, **layout_args)
    state = random_state(layout)
    path = tmp_path / "zoo.pth"
    torch.save({"state_dict": state, "arch": arch, "epoch": 3, "iteration": 1200, "best_val": 71.5}, path)

    model = load_original_checkpoint(path)  # network, channels and stem size all come from the file

    assert model.D == dimension and model.out_channels == 20 and model.in_channels == 3
    assert model.conv1_kernel_size == layout_args.get("stem_kernel", 3)
    ours = model.state_dict()
    assert set(ours) == set(layout)
    for key, tensor in ours.items():
        assert tuple(tensor.shape) == layout[key], key
    # non-kernel entries and kernels without a spatial extent arrive unchanged
    assert torch.equal(ours["bn0.bn.running_var"], state["bn0.bn.running_var"])
    assert torch.equal(ours["final.bias"], state["final.bias"]) and torch.equal(ours["final.kernel"],
                                                                                state["final.kernel"])
    # block conv rows: our row for offset o is the file's row at o's position in the original order
    last = len(model.block2) - 1
    layer, key = model.block2[last].conv2, f"block2.{last}.conv2.kernel"
    for row, offset in enumerate(layer.kernel_offsets.tolist()):
        assert torch.equal(ours[key][row], state[key][block_order.index(tuple(offset))])
    # down convs: cube order in every code base
    down = model.conv2p2s2
    down_order = cube_order(tuple(down.kernel_generator.kernel_size))
    for row, offset in enumerate(down.kernel_offsets.tolist()):
        assert torch.equal(ours["conv2p2s2.kernel"][row], state["conv2p2s2.kernel"][down_order.index(tuple(offset))])


# ---------------------------------------------------------------- the loaded layers compute the original convs

def _features_by_coordinate(tensor: ME.SparseTensor) -> dict[tuple[int, ...], torch.Tensor]:
    return {tuple(c): f for c, f in zip(tensor.C.tolist(), tensor.F)}


def _reference_conv(x: ME.SparseTensor, kernel: torch.Tensor, order, out_coordinates, step: int = 1):
    """out(p) = sum_k in(p + step * offset_k) @ kernel[k], offsets in the file's order."""
    table = _features_by_coordinate(x)
    result = {}
    for p in out_coordinates:
        total = torch.zeros(kernel.shape[-1], dtype=torch.float64)
        for k, offset in enumerate(order):
            q = (p[0],) + tuple(c + step * o for c, o in zip(p[1:], offset))
            if q in table:
                total += table[q].double() @ kernel[k].double()
        result[p] = total
    return result


def _small_input(dimension: int, channels: int, seed: int = 1) -> ME.SparseTensor:
    generator = torch.Generator().manual_seed(seed)
    spatial = torch.randint(0, 6, (160, 3), generator=generator)
    if dimension == 4:
        spatial = torch.cat([spatial, torch.randint(0, 3, (160, 1), generator=generator)], 1)
    spatial = torch.unique(spatial, dim=0)
    coordinates = torch.cat([torch.zeros(len(spatial), 1, dtype=torch.long), spatial], 1).int()
    return ME.SparseTensor(torch.randn(len(spatial), channels, generator=generator), coordinates)


def _assert_matches(out: ME.SparseTensor, reference: dict) -> None:
    got = _features_by_coordinate(out)
    assert set(got) == set(reference)
    for coordinate, value in reference.items():
        assert torch.allclose(got[coordinate].double(), value, atol=1e-4), coordinate


@pytest.mark.parametrize("arch, layout_args, dimension, block_order", [CASES[0], CASES[3], CASES[4]],
                         ids=["Mink16UNet34C", "MinkUNet34C", "STRes16UNet14A"])
def test_loaded_layers_compute_the_original_convolutions(arch, layout_args, dimension, block_order) -> None:
    state = random_state(original_layout(3, 20, **layout_args), seed=5)
    model = load_original_checkpoint(state, model_name=arch)
    with torch.no_grad():
        block = model.block1[0].conv2
        x = _small_input(dimension, block.in_channels)
        reference = _reference_conv(x, state["block1.0.conv2.kernel"], block_order, [tuple(c) for c in x.C.tolist()])
        _assert_matches(block(x), reference)

        down = model.conv1p1s2
        x = _small_input(dimension, down.in_channels, seed=2)
        sizes = (2, 2, 2) if dimension == 3 else (2, 2, 2, 1)
        coarse = torch.cat([x.C[:, :1], torch.div(x.C[:, 1:], torch.tensor(sizes), rounding_mode="floor")
                            * torch.tensor(sizes)], 1)
        out_coordinates = sorted({tuple(c) for c in coarse.tolist()})
        y = down(x)
        _assert_matches(y, _reference_conv(x, state["conv1p1s2.kernel"], cube_order(sizes), out_coordinates))

        up = model.convtr7p2s2  # back onto x's voxels: fine q gets coarse parent p through offset q - p
        coarse_in = y.replace_features(torch.randn(len(y), up.in_channels, generator=torch.Generator().manual_seed(3)))
        parents = _features_by_coordinate(coarse_in)
        order = cube_order(sizes)
        expected = {}
        for q in [tuple(c) for c in x.C.tolist()]:
            p = (q[0],) + tuple((c // s) * s for c, s in zip(q[1:], sizes))
            k = order.index(tuple(a - b for a, b in zip(q[1:], p[1:])))
            expected[q] = parents[p].double() @ state["convtr7p2s2.kernel"][k].double()
        _assert_matches(up(coarse_in), expected)


# ---------------------------------------------------------------- options and round trips

def test_cube_order_option_takes_block_rows_as_they_are() -> None:
    state = random_state(original_layout(3, 20, layers=L14, planes=P14A), seed=7)
    model = load_original_checkpoint(state, model_name="Res16UNet14A", block_kernel_order="cube")
    layer = model.block3[0].conv1
    order = cube_order((3, 3, 3))
    for row, offset in enumerate(layer.kernel_offsets.tolist()):
        assert torch.equal(layer.kernel[row].detach(), state["block3.0.conv1.kernel"][order.index(tuple(offset))])


@pytest.mark.parametrize("name", ["Res16UNet14A", "STRes16UNet14A", "MinkUNet14A"])
def test_export_to_original_order_round_trips(name) -> None:
    torch.manual_seed(0)
    source = build_model(name, 3, 6)
    exported = to_original_order(source)
    target = load_original_checkpoint({"state_dict": exported}, model_name=name)
    for key, tensor in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], tensor), key


def test_bare_state_dict_bias_vector_and_unit_kernel_shapes_are_mapped(tmp_path) -> None:
    state = random_state(original_layout(3, 13, layers=L14, planes=P14A))
    state["final.bias"] = state["final.bias"].reshape(13)  # exporters that drop ME's leading 1
    state["block5.0.downsample.0.kernel"] = state["block5.0.downsample.0.kernel"][None]  # [1, in, out]
    for key in [k for k in state if k.endswith("num_batches_tracked")][:3]:
        del state[key]  # files from before torch 0.4.1
    path = tmp_path / "bare.pth"
    torch.save({f"module.{k}": v for k, v in state.items()}, path)  # DataParallel prefix
    model = load_original_checkpoint(path, model_name="Mink16UNet14A")
    assert model.final.bias.shape == (1, 13)
    assert torch.equal(model.final.bias.detach()[0], state["final.bias"])


def test_loading_into_a_given_model(tmp_path) -> None:
    state = random_state(original_layout(3, 20, layers=L14, planes=P14A))
    model = build_model("Res16UNet14A", 3, 20)
    assert load_original_checkpoint({"state_dict": state}, model) is model
    assert torch.equal(model.bn3.bn.weight.detach(), state["bn3.bn.weight"])


# ---------------------------------------------------------------- errors

def test_class_count_mismatch_names_the_model_and_both_counts() -> None:
    state = random_state(original_layout(3, 13, layers=L14, planes=P14A))
    with pytest.raises(CheckpointError) as error:
        load_original_checkpoint(state, build_model("Res16UNet14A", 3, 20))
    message = str(error.value)
    assert "Res16UNet14A" in message and "out_channels=20" in message and "13 classes" in message
    assert "final.kernel: file (96, 13) vs model (96, 20)" in message and "\n" not in message


def test_missing_and_unexpected_keys_are_listed() -> None:
    state = random_state(original_layout(3, 20, layers=L14, planes=P14A))
    del state["block4.0.conv2.kernel"]
    state["crf.kernel"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match=r"1 missing keys \(block4\.0\.conv2\.kernel\).*"
                                              r"1 unexpected keys \(crf\.kernel\)"):
        load_original_checkpoint(state, model_name="Res16UNet14A")


def test_non_strict_load_skips_what_does_not_fit() -> None:
    state = random_state(original_layout(3, 20, layers=L14, planes=P14A))
    del state["bn0.bn.weight"]
    model = load_original_checkpoint(state, build_model("Res16UNet14A", 3, 20), strict=False)
    assert torch.equal(model.bn1.bn.weight.detach(), state["bn1.bn.weight"])


class _NotATensor:
    pass


@pytest.mark.parametrize("content, pattern", [
    ({"state_dict": {"x": _NotATensor()}}, "weights_only"),
    ({"epoch": 3}, "not a state dict"),
    ([1, 2, 3], "expected a dict"),
])
def test_unreadable_files_are_checkpoint_errors(tmp_path, content, pattern) -> None:
    path = tmp_path / "odd.pth"
    torch.save(content, path)
    with pytest.raises(CheckpointError, match=pattern):
        load_original_checkpoint(path, model_name="Res16UNet14A")


def test_missing_file_unknown_arch_and_bad_order_are_checkpoint_errors(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_original_checkpoint(tmp_path / "nope.pth", model_name="Res16UNet14A")
    state = random_state(original_layout(3, 20, layers=L14, planes=P14A))
    with pytest.raises(CheckpointError, match="valid names: .*Res16UNet14A"):
        load_original_checkpoint({"state_dict": state, "arch": "Res16UNet99"})
    with pytest.raises(CheckpointError, match="does not name its network"):
        load_original_checkpoint(state)
    with pytest.raises(CheckpointError, match="block_kernel_order"):
        load_original_checkpoint(state, model_name="Res16UNet14A", block_kernel_order="zyx")
