"""Packed kernels against PyTorch on the unpacked values, odd sizes included, and bad input."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qnnlab import kernels
from qnnlab.kernels import (
    binary_matmul,
    bitplane_matmul,
    bitserial_matmul,
    pack,
    sign_weight_matmul,
    sign_weight_panels,
    unpack,
)

SIZES = [1, 63, 64, 65, 127, 1000]


def pm1(*shape):
    return torch.where(torch.rand(*shape) < 0.5, -1.0, 1.0)


@pytest.mark.parametrize("k", SIZES)
def test_pack_round_trip_and_tail_bits(k):
    torch.manual_seed(k)
    x = pm1(3, k)
    packed = pack(x)
    assert packed.dtype == torch.int64 and packed.shape == (3, (k + 63) // 64)
    assert torch.equal(unpack(packed, k), x)
    tail = 64 * packed.shape[1] - k
    if tail:
        assert ((packed[:, -1] >> (64 - tail)) & ((1 << tail) - 1)).eq(0).all()  # padding bits are clear


def test_pack_bit_order_and_sign_bits():
    x = torch.tensor([1.0, -1.0, 1.0] + [-1.0] * 60 + [1.0])
    assert pack(x).item() == (1 | 4 | (1 << 63)) - (1 << 64)  # bit k of word 0 is element k; int64 wraps
    assert torch.equal(pack(torch.tensor([0.3, -2.0, 0.0])), pack(torch.tensor([1.0, -1.0, 1.0])))
    assert torch.equal(pack(torch.tensor([True, False])), pack(torch.tensor([1.0, -1.0])))


@pytest.mark.parametrize("k", SIZES)
@pytest.mark.parametrize("m, n", [(1, 1), (1, 37), (37, 1), (5, 9), (33, 70)])
def test_binary_matmul_equals_float_product(k, m, n):
    torch.manual_seed(k * 100 + m + n)
    a, b = pm1(m, k), pm1(n, k)
    out = binary_matmul(pack(a), pack(b), k)
    assert out.dtype == torch.int32 and torch.equal(out, (a @ b.T).to(torch.int32))


@pytest.mark.parametrize("a_bits, b_bits", [(1, 1), (2, 2), (2, 3), (4, 1)])
@pytest.mark.parametrize("k", [1, 65, 300])
@pytest.mark.parametrize("m, n", [(7, 5), (13, 70)])  # small: AND-popcounts; from a tile up: XOR tiles
def test_bitserial_matmul(a_bits, b_bits, k, m, n):
    torch.manual_seed(k)
    a = torch.randint(0, 2**a_bits, (m, k))
    b = torch.randint(0, 2**b_bits, (n, k))
    assert torch.equal(bitserial_matmul(a, b, a_bits, b_bits), a @ b.T)


@pytest.mark.parametrize("k", [1, 63, 784])
@pytest.mark.parametrize("m, n", [(4, 6), (8, 40)])
def test_bitplane_first_layer(k, m, n):
    torch.manual_seed(k)
    x = torch.randint(0, 256, (m, k))
    w = pm1(n, k)
    assert torch.equal(bitplane_matmul(x, pack(w), k), (x.double() @ w.double().T).long())


def _weight_only_paths(w_packed, k, integer):
    """The masked additions, and the table lookups where the CPU has them."""
    panels = sign_weight_panels(w_packed, k, integer)
    return [None] if panels is None else [None, panels]


@pytest.mark.parametrize("k", [1, 63, 64, 65, 100, 1000])
@pytest.mark.parametrize("n", [1, 4, 9, 33, 130])
def test_sign_weight_matmul(k, n):
    torch.manual_seed(k + n)
    x, w = torch.randn(3, k), pm1(n, k)
    for panels in _weight_only_paths(pack(w), k, integer=False):
        assert torch.allclose(sign_weight_matmul(x, pack(w), k, panels), x @ w.T, atol=1e-4)
    x8 = torch.randint(-128, 128, (2, k), dtype=torch.int8)
    for panels in _weight_only_paths(pack(w), k, integer=True):
        exact = sign_weight_matmul(x8, pack(w), k, panels)
        assert exact.dtype == torch.int32 and torch.equal(exact, (x8.long() @ w.long().T).int())


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_int8_weight_only_sums_stay_exact_past_the_int16_lanes(sign):
    k = 64 * 600  # several runs of int16 accumulation, each folded into int32 lanes
    x8 = torch.full((1, k), -128, dtype=torch.int8)
    w = torch.full((37, k), sign)
    w[1] = -sign
    for panels in _weight_only_paths(pack(w), k, integer=True):
        out = sign_weight_matmul(x8, pack(w), k, panels)
        assert out[0, 0] == -128 * k * sign and out[0, 1] == 128 * k * sign and len(set(out[0, 2:].tolist())) == 1


def test_weight_only_panels_must_match_the_inputs():
    w = pack(pm1(40, 200))
    panels = sign_weight_panels(w, 200, integer=True)
    if panels is None:
        pytest.skip("this CPU has no AVX-512 lookups")
    with pytest.raises(ValueError, match="integer=False"):
        sign_weight_matmul(torch.randn(1, 200), w, 200, panels)
    with pytest.raises(ValueError, match="got torch.int16"):
        sign_weight_matmul(torch.zeros(1, 200, dtype=torch.int8), w, 200, panels[:1])


def test_bad_input_is_rejected_clearly():
    a = pack(pm1(2, 65))
    with pytest.raises(ValueError, match="needs 1"):
        binary_matmul(a, a, 64)  # K does not match the packed width
    with pytest.raises(ValueError, match="int64"):
        binary_matmul(a.int(), a, 65)
    with pytest.raises(ValueError, match="2-D"):
        binary_matmul(a[0], a, 65)
    with pytest.raises(ValueError, match="positive int"):
        binary_matmul(a, a, 0)
    with pytest.raises(ValueError, match="words per row"):
        binary_matmul(a, pack(pm1(2, 200)), 65)
    with pytest.raises(ValueError, match="K must be at least 1"):
        pack(torch.zeros(3, 0))
    with pytest.raises(ValueError, match="codes outside"):
        bitserial_matmul(torch.tensor([[4]]), torch.tensor([[1]]), 2, 1)
    with pytest.raises(ValueError, match="integer tensor"):
        bitserial_matmul(torch.rand(2, 3), torch.rand(2, 3), 2, 2)
    with pytest.raises(TypeError):
        pack([1, -1])
    assert kernels.words(65) == 2


@pytest.mark.parametrize(
    "channels, size, kernel, stride, padding",
    [
        (1, 5, 3, 1, 0),
        (3, 7, 3, 1, 1),
        (64, 6, 3, 1, 1),
        (65, 5, 3, 2, 1),
        (130, 4, 1, 1, 0),
        (17, 9, 5, 2, 2),
    ],
)
def test_binary_conv2d_matches_zero_padded_conv(channels, size, kernel, stride, padding):
    from qnnlab.kernels import binary_conv2d, pack_filters, pack_nhwc

    torch.manual_seed(channels + size)
    x, w = pm1(2, channels, size, size + 1), pm1(5, channels, kernel, kernel)
    expected = torch.nn.functional.conv2d(x, w, stride=stride, padding=padding).round().to(torch.int32)
    got = binary_conv2d(pack_nhwc(x), pack_filters(w), channels, (kernel, kernel), stride, padding)
    assert got.dtype == torch.int32 and torch.equal(got, expected)


def test_binary_conv2d_bad_input():
    from qnnlab.kernels import binary_conv2d, pack_filters, pack_nhwc

    x, w = pack_nhwc(pm1(1, 3, 4, 4)), pack_filters(pm1(2, 3, 3, 3))
    with pytest.raises(ValueError, match="smaller than the 3x3 kernel"):
        binary_conv2d(pack_nhwc(pm1(1, 3, 2, 2)), w, 3, (3, 3))
    with pytest.raises(ValueError, match="channel-packed"):
        binary_conv2d(x, w, 70, (3, 3))
    with pytest.raises(ValueError, match="filters must be packed"):
        binary_conv2d(x, w, 3, (2, 2))


def test_popcount_loops_compile_to_vector_popcounts_where_the_cpu_has_them():
    from pathlib import Path

    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists() or "avx512_vpopcntdq" not in cpuinfo.read_text():
        pytest.skip("this CPU has no AVX-512 VPOPCNTDQ")
    import numba
    import numpy as np

    from qnnlab.kernels import _numba

    compiled = numba.njit(parallel=True, fastmath=True)(_numba._xnor_gemm_rows)
    compiled(np.zeros((2, 2), np.uint64), np.zeros((2, 16), np.uint64), 128, np.zeros((2, 16), np.int32))
    assembly = "".join(compiled.inspect_asm().values())
    assert "vpopcntq" in assembly


@settings(max_examples=60, deadline=None)
@given(m=st.integers(1, 40), n=st.integers(1, 40), k=st.integers(1, 300), seed=st.integers(0, 2**16))
def test_binary_matmul_property(m, n, k, seed):
    torch.manual_seed(seed)
    a, b = pm1(m, k), pm1(n, k)
    assert torch.equal(binary_matmul(pack(a), pack(b), k), (a @ b.T).to(torch.int32))
    assert torch.equal(unpack(pack(a), k), a)


def test_a_kernel_call_leaves_torchs_thread_count_alone():
    import subprocess
    import sys

    code = (
        "import torch; torch.set_num_threads(1); from qnnlab import kernels; "
        "a = kernels.pack(torch.ones(4, 128)); kernels.binary_matmul(a, a, 128); print(torch.get_num_threads())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "1"  # numba's thread pool, started on first use, used to reset it to the core count


def test_numba_runs_an_openmp_pool_with_a_short_spin_and_threads_that_launch_at_once_take_turns():
    """Unless the user chose a threading layer, numba's pool is its OpenMP layer, whose libgomp
    reads a short spin count from the environment at load (the variable is removed after, so
    child processes' torch keeps its default); threads launching at once take turns
    (``kernels.launch``), which the workqueue layer a user may choose needs, and one starts the
    pool."""
    import os
    import subprocess
    import sys

    code = """
import os, threading, numba, torch
from qnnlab import kernels
torch.set_num_threads(2)
x, y = (torch.where(torch.rand(rows, 2048) < 0.5, -1.0, 1.0) for rows in (512, 1024))
a, b = kernels.pack(x), kernels.pack(y)
expected = (x @ y.T).to(torch.int32)  # the threads make the first kernel calls, all at once
wrong = []
def work():
    for _ in range(30):
        wrong.append(not torch.equal(kernels.binary_matmul(a, b, 2048), expected))
threads = [threading.Thread(target=work) for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
print(numba.threading_layer(), sum(wrong), os.environ.get("GOMP_SPINCOUNT", "unset"), torch.get_num_threads())
"""
    chosen = {"NUMBA_THREADING_LAYER", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT"}
    env = {name: value for name, value in os.environ.items() if name not in chosen}
    for layer, expected in ((None, "omp"), ("workqueue", "workqueue")):
        run_env = env if layer is None else {**env, "NUMBA_THREADING_LAYER": layer}
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=run_env, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.split() == [expected, "0", "unset", "2"]


def test_the_popcount_rate_is_a_rate_and_counts_every_thread():
    import numba

    from qnnlab.kernels import _rates

    for run_loops in _rates.RUNNERS.values():
        out = np.zeros(2, dtype=np.uint64)
        run_loops(3, out)
        assert out[0] == out[1] > 0  # every thread ran the same loop; its total is not folded away
    assert kernels.popcount_rate(repeats=1, steps=1 << 12) > 1e8 * numba.get_num_threads()
    most_per_step = max(_rates.macs_per_step(*shape) for shape in _rates.SHAPES) * numba.get_num_threads()
    assert 10**7 - most_per_step < kernels.popcount_loop(10**7)() <= 10**7
    for wrong in (0, -5, 2.5, True):
        with pytest.raises(ValueError, match="positive count of multiply-accumulates"):
            kernels.popcount_loop(wrong)


@pytest.mark.parametrize(
    "m, n, k",
    [(5, 33, 65), (9, 70, 1000), (64, 64, 64), (33, 97, 130), (4, 32, 1), (3, 31, 63), (7, 64, 100), (8, 40, 70)]
    # rows past two of a's L2 blocks (1020 rows of 64 words each); the short tile alone in a block
    + [(2 * 1020 + 5, 40, 4096 - 1), (1020 + 3, 40, 4096 - 1)],
)
def test_register_tiled_gemm_is_exact_on_full_tiles_and_edges(m, n, k):
    from qnnlab.kernels import _panels

    torch.manual_seed(m + n + k)
    a, b = pm1(m, k), pm1(n, k)
    pa, pb = pack(a).numpy().view(np.uint64), pack(b).numpy().view(np.uint64)
    out = np.empty((m, n), dtype=np.int32)
    _panels.gemm(pa, _panels.panels(pb), pb, k, out)
    assert np.array_equal(out, (a @ b.T).numpy().astype(np.int32))


@pytest.mark.parametrize("m, n", [(1, 40), (6, 40), (6, 600)])  # the GEMV, per-row and tiled paths
def test_binary_matmul_writes_into_out_and_refuses_a_wrong_one(m, n):
    torch.manual_seed(m + n)
    a, b = pm1(m, 1000), pm1(n, 1000)
    out = torch.full((m, n), 7, dtype=torch.int32)
    assert binary_matmul(pack(a), pack(b), 1000, out=out) is out
    assert torch.equal(out, (a @ b.T).to(torch.int32))
    for wrong in (out.to(torch.int64), out[:, :-1], torch.empty((m, 2 * n), dtype=torch.int32)[:, ::2]):
        with pytest.raises(ValueError, match="give a contiguous torch.int32"):
            binary_matmul(pack(a), pack(b), 1000, out=wrong)


@pytest.mark.parametrize("n, offset", [(1024, 0), (1024, 1), (1000, 0), (1001, 0)])
def test_outputs_past_the_caches_are_exact_streamed_or_not(n, offset):
    """Outputs of 2 MiB or more are written by non-temporal stores where rows align (n % 16 == 0
    and a 64-byte aligned start); a misaligned out or other n takes the ordinary stores."""
    from qnnlab.kernels import _panels

    torch.manual_seed(n + offset)
    m, k = 600, 1000  # on the register tiles
    assert m * n * 4 >= _panels.STREAM_BYTES
    a, b = pm1(m, k), pm1(n, k)
    out = torch.full((m * n + offset,), 7, dtype=torch.int32)[offset:].view(m, n)
    assert binary_matmul(pack(a), pack(b), k, out=out) is out
    assert torch.equal(out, (a @ b.T).to(torch.int32))


def test_binary_matmul_takes_the_tiled_path_for_larger_products_and_checks_its_panels():
    torch.manual_seed(0)
    a, b = pm1(6, 1000), pm1(600, 1000)  # 6 x 600 x 16 word products: enough for the register tiles
    expected = (a @ b.T).to(torch.int32)
    assert torch.equal(binary_matmul(pack(a), pack(b), 1000), expected)
    assert torch.equal(binary_matmul(pack(a), pack(b), 1000, kernels.binary_panels(pack(b))), expected)
    with pytest.raises(ValueError, match="binary_panels"):
        binary_matmul(pack(a), pack(b), 1000, kernels.binary_panels(pack(b[:100])))


def test_the_pixel_grid_check_takes_codes_0_to_255_and_nothing_else():
    grid = torch.arange(256, dtype=torch.float32) / 127.5 - 1
    assert kernels.on_pixel_grid(grid.reshape(2, 2, 64)) and kernels.on_pixel_grid(grid.double())
    half_a_code = -1 + 0.5 / 127.5
    for bad in (half_a_code, float("nan"), float("inf"), 1 + 1 / 127.5, -1 - 1 / 127.5):
        assert not kernels.on_pixel_grid(torch.cat([grid, torch.tensor([bad])]))


def test_without_avx512_the_masked_additions_run(monkeypatch):
    import qnnlab.kernels as k

    w = pack(pm1(40, 200))
    real = sign_weight_panels(w, 200, integer=False)
    monkeypatch.setattr(k, "sign_weight_lookups", lambda: False)
    assert sign_weight_panels(w, 200, integer=False) is None
    if real is not None:  # panels made where the CPU has the permutes cannot run where it has not
        with pytest.raises(ValueError, match="panels=None"):
            sign_weight_matmul(torch.randn(1, 200), w, 200, real)


@pytest.mark.parametrize("n", [64, 128, 192])
def test_whole_word_threshold_packing_equals_the_per_bit_path(n):
    """float32 rows of whole words take vector compares; float64 rows the per-bit loop: the same bits,
    NaN, infinities, signed zeros and ties on the bound included."""
    torch.manual_seed(n)
    y = torch.randn(7, n) * 3
    y[0, :8] = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, -0.0, 1.5, -1.5, 2.0])
    threshold = torch.randn(n).double()
    threshold[5], threshold[7] = 1.5, 2.0  # y equal to the bound: fires
    positive = torch.rand(n) < 0.5
    constant = torch.where(torch.rand(n) < 0.2, torch.randint(0, 2, (n,)).double(), torch.tensor(-1.0).double())
    tables = kernels.threshold_tables(threshold, positive, constant)
    words = kernels.threshold_pack_tables(y, *tables)
    assert torch.equal(words, kernels.threshold_pack_tables(y.double(), *tables))
