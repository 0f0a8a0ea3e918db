"""Parity with spconv 2.3.8 (the fastest maintained engine) on the same input and weights."""
from __future__ import annotations

import warnings

import pytest
import torch

import minkseg.sparse as ME
from tests.sparse_oracle import random_sparse_coords

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    spconv = pytest.importorskip("spconv.pytorch")


@pytest.fixture(autouse=True)
def one_thread():
    """spconv 2.3.8's CPU kernels race with more than one thread (wrong outputs, see benchmarks/sparse_conv.py):
    the oracle must run single-threaded to be an oracle."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _spconv_weight(layer) -> torch.Tensor:
    """Our [K, in, out] kernel as spconv's [out, k0, k1, k2, in], placing each row at its kernel offset."""
    offsets = layer.kernel_offsets
    lo = offsets.min(0).values
    extent = (offsets.max(0).values - lo + 1).tolist()
    weight = torch.zeros([layer.out_channels] + extent + [layer.in_channels])
    for k, off in enumerate(offsets):
        weight[(slice(None),) + tuple((off - lo).tolist()) + (slice(None),)] = layer.kernel[k].detach().t()
    return weight


def _rows_by_coordinate(coords: torch.Tensor, feats: torch.Tensor) -> dict[tuple, torch.Tensor]:
    return {tuple(c): f for c, f in zip(coords.tolist(), feats)}


def _pair(size=10, seed=0):
    coords = random_sparse_coords(2, size, 0.25, seed=seed)
    feats = torch.randn(coords.shape[0], 8, generator=torch.Generator().manual_seed(seed))
    return coords, feats


def test_submanifold_conv_matches_spconv_subm():
    coords, feats = _pair()
    ours = ME.MinkowskiConvolution(8, 6, 3, dimension=3)
    theirs = spconv.SubMConv3d(8, 6, 3, bias=False)
    with torch.no_grad():
        theirs.weight.copy_(_spconv_weight(ours))
    out = ours(ME.SparseTensor(feats, coords))
    ref = theirs(spconv.SparseConvTensor(feats, coords, [10, 10, 10], 2))
    got = _rows_by_coordinate(out.C, out.F.detach())
    want = _rows_by_coordinate(ref.indices, ref.features.detach())
    assert got.keys() == want.keys()
    for key in got:
        torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-5)


def test_strided_conv_matches_spconv_sparseconv():
    coords, feats = _pair(seed=1)
    ours = ME.MinkowskiConvolution(8, 6, 2, stride=2, dimension=3)
    theirs = spconv.SparseConv3d(8, 6, 2, stride=2, bias=False)
    with torch.no_grad():
        theirs.weight.copy_(_spconv_weight(ours))
    out = ours(ME.SparseTensor(feats, coords))
    ref = theirs(spconv.SparseConvTensor(feats, coords, [10, 10, 10], 2))
    # spconv indexes the output grid contracted by the stride; ME keeps fine-grid coordinates (times 2)
    ref_coords = ref.indices.clone()
    ref_coords[:, 1:] *= 2
    got = _rows_by_coordinate(out.C, out.F.detach())
    want = _rows_by_coordinate(ref_coords, ref.features.detach())
    assert got.keys() == want.keys()
    for key in got:
        torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-5)
