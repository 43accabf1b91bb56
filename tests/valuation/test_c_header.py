"""model_interface.h from a declaration: deterministic, current for term_life, valid C for wasm32
and native, and its accessors read what a hand-packed ABI v2 context points at."""

from __future__ import annotations

import ctypes
import shutil
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from services.valuation.sdk.c_header import HEADER_NAME, load_interface, render_header

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "services" / "valuation" / "reference_model"
INCLUDE = REFERENCE / "models" / "src" / "include"


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    values: tuple[str, ...] = ()


@dataclass(frozen=True)
class Axis:
    name: str
    first: int = 0
    size: int | None = None


@dataclass(frozen=True)
class Table:
    name: str
    axes: tuple[Axis, ...]


@dataclass(frozen=True)
class Parameter:
    name: str
    type: str = "float64"


@dataclass(frozen=True)
class ScenarioInput:
    name: str


@dataclass(frozen=True)
class Output:
    name: str
    primary: bool = False
    monthly: bool = False


@dataclass(frozen=True)
class Interface:
    columns: tuple[Column, ...]
    tables: tuple[Table, ...] = ()
    parameters: tuple[Parameter, ...] = ()
    scenario_inputs: tuple[ScenarioInput, ...] = ()
    outputs: tuple[Output, ...] = (Output("pv", primary=True),)


def made_up() -> Interface:
    return Interface(
        columns=(
            Column("id", "int64"),
            Column("age", "int32"),
            Column("smoker", "category", ("no", "yes", "ex-smoker")),
            Column("fund", "float64"),
        ),
        tables=(Table("qx", (Axis("x", 20, 3), Axis("dur", 0, 2))), Table("yc", (Axis("year"),))),
        parameters=(Parameter("rate"), Parameter("n_paths", "int64"), Parameter("seed", "uint64")),
        scenario_inputs=(ScenarioInput("eq"), ScenarioInput("ir")),
        outputs=(Output("pv_a"), Output("pv_b", primary=True, monthly=True)),
    )


def test_header_is_deterministic_and_says_it_is_generated() -> None:
    text = render_header(made_up())
    assert text == render_header(made_up())
    assert "GENERATED" in text.splitlines()[1]
    assert "#define SMOKER_EX_SMOKER 2" in text
    assert "static inline const int64_t *col_id(LC_BASE_ARG const lc_ctx *c)" in text
    assert "#define LC_PRIMARY_OUTPUT OUT_PV_B" in text
    assert "#define MONTHLY_PV_B 0" in text and "#define LC_N_MONTHLY 1" in text
    assert "MONTHLY_PV_A" not in text


def test_the_features_export_says_nothing_unless_the_model_defines_it() -> None:
    """lc_features() returns LC_FEATURES, 0 unless the model's C defines it before the include."""
    text = render_header(made_up())
    assert "#ifndef LC_FEATURES\n#define LC_FEATURES 0\n#endif" in text
    assert "int32_t lc_features(void) { return LC_FEATURES; }" in text


def test_committed_term_life_header_is_current() -> None:
    """models/build.py writes it from term_life.interface.json; `make wasm` after changing either."""
    interface = load_interface(REFERENCE / "term_life.interface.json")
    assert (INCLUDE / HEADER_NAME).read_text(encoding="utf-8") == render_header(interface)


@pytest.mark.parametrize(
    ("interface", "message"),
    [
        (Interface((Column("a", "int32"),), tables=(Table("b", (Axis("x"),)), Table("b_size", (Axis("x"),)))), "both"),
        (Interface((Column("lc", "category", ("ok",)),)), "LC_"),
        (Interface((Column("s", "category", ("a-b", "a_b")),)), "both"),
        (Interface((Column("A", "int32"),)), "identifier"),
        (Interface((Column("a", "int16"),)), "type"),
        (Interface((Column("a", "int32"),), outputs=(Output("x"), Output("y"))), "primary"),
    ],
)
def test_names_that_cannot_become_c_are_refused(interface: Interface, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        render_header(interface)


PROBE = r"""
#include "model_interface.h"

_Static_assert(COL_ID == 0 && COL_FUND == 3 && LC_N_COLUMNS == 4, "columns");
_Static_assert(SMOKER_NO == 0 && SMOKER_YES == 1 && SMOKER_EX_SMOKER == 2, "category codes");
_Static_assert(TABLE_YC == 1 && AXIS_QX_X == 0 && AXIS_QX_DUR == 1 && AXIS_YC_YEAR == 0, "tables");
_Static_assert(PARAM_SEED == 2 && LC_N_PARAMS == 3 && SCEN_IR == 1 && LC_N_SCENARIO_INPUTS == 2, "scalars");
_Static_assert(OUT_PV_A == 0 && OUT_PV_B == 1 && LC_N_OUTPUTS == 2 && LC_PRIMARY_OUTPUT == 1, "outputs");
_Static_assert(MONTHLY_PV_B == 0 && LC_N_MONTHLY == 1, "monthly outputs");

#define CTX const lc_ctx *c = lc_context(LC_BASE ctx)
LC_EXPORT(p_check) int32_t p_check(LC_BASE_ARG uint32_t ctx) { CTX; return interface_check(LC_BASE c); }
LC_EXPORT(p_id) int64_t p_id(LC_BASE_ARG uint32_t ctx, uint32_t i) { CTX; return col_id(LC_BASE c)[i]; }
LC_EXPORT(p_age) int32_t p_age(LC_BASE_ARG uint32_t ctx, uint32_t i) { CTX; return col_age(LC_BASE c)[i]; }
LC_EXPORT(p_smoker) int32_t p_smoker(LC_BASE_ARG uint32_t ctx, uint32_t i) { CTX; return col_smoker(LC_BASE c)[i]; }
LC_EXPORT(p_fund) double p_fund(LC_BASE_ARG uint32_t ctx, uint32_t i) { CTX; return col_fund(LC_BASE c)[i]; }
LC_EXPORT(p_qx) double p_qx(LC_BASE_ARG uint32_t ctx, uint32_t i) { CTX; return table_qx(LC_BASE c)[i]; }
LC_EXPORT(p_yc) double p_yc(LC_BASE_ARG uint32_t ctx, uint32_t i) { CTX; return table_yc(LC_BASE c)[i]; }
LC_EXPORT(p_qx_origin) int32_t p_qx_origin(LC_BASE_ARG uint32_t ctx, uint32_t a) {
    CTX; return table_qx_origin(LC_BASE c, a);
}
LC_EXPORT(p_qx_size) uint32_t p_qx_size(LC_BASE_ARG uint32_t ctx, uint32_t a) {
    CTX; return table_qx_size(LC_BASE c, a);
}
LC_EXPORT(p_rate) double p_rate(LC_BASE_ARG uint32_t ctx) { CTX; return param_rate(LC_BASE c); }
LC_EXPORT(p_n_paths) int64_t p_n_paths(LC_BASE_ARG uint32_t ctx) { CTX; return param_n_paths(LC_BASE c); }
LC_EXPORT(p_seed) uint64_t p_seed(LC_BASE_ARG uint32_t ctx) { CTX; return param_seed(LC_BASE c); }
LC_EXPORT(p_ir) double p_ir(LC_BASE_ARG uint32_t ctx, uint32_t s, uint32_t m) {
    CTX; return scen_ir(LC_BASE c)[s * scen_ir_stride(LC_BASE c) + m];
}
LC_EXPORT(p_eq_stride) uint32_t p_eq_stride(LC_BASE_ARG uint32_t ctx) { CTX; return scen_eq_stride(LC_BASE c); }
LC_EXPORT(p_partial) double p_partial(LC_BASE_ARG uint32_t ctx, uint32_t i) { CTX; return lc_partials(LC_BASE c)[i]; }
"""


def _sources(tmp_path: Path) -> Path:
    (tmp_path / HEADER_NAME).write_text(render_header(made_up()), encoding="utf-8")
    (tmp_path / "probe.c").write_text(PROBE, encoding="utf-8")
    return tmp_path / "probe.c"


def test_header_compiles_for_wasm32(tmp_path: Path) -> None:
    probe = _sources(tmp_path)
    zig = [sys.executable, "-m", "ziglang", "cc", "-target", "wasm32-wasi", "-O2", "-msimd128"]
    warnings = ["-Wall", "-Wextra", "-Werror"]
    subprocess.run([*zig, *warnings, f"-I{INCLUDE}", "-c", str(probe), "-o", str(tmp_path / "probe.o")], check=True)


class Memory:
    """A bump allocator over a numpy buffer: offsets relative to its 64-byte aligned base."""

    def __init__(self, size: int = 1 << 16) -> None:
        self.buf = np.zeros(size + 64, np.uint8)
        self.base = int(self.buf.ctypes.data) + (-int(self.buf.ctypes.data)) % 64
        self.top = 64  # offset 0 stays unused, as in the engine's memory

    def put(self, data: bytes) -> int:
        off = self.top
        ctypes.memmove(self.base + off, data, len(data))
        self.top = (off + len(data) + 15) & ~15
        return off


_ARRAY = struct.Struct("<IIII4I4i")


def _array(offset: int, kind: int, shape: tuple[int, ...], origin: tuple[int, ...] = ()) -> bytes:
    return _ARRAY.pack(offset, kind, len(shape), 0, *shape, *(1,) * (4 - len(shape)),
                       *origin, *(0,) * (4 - len(origin)))  # fmt: skip


def _native_library(tmp_path: Path) -> ctypes.CDLL:
    probe = _sources(tmp_path)
    cc = shutil.which("cc")
    compiler = [cc] if cc else [sys.executable, "-m", "ziglang", "cc"]
    lib = tmp_path / "libprobe.so"
    flags = ["-O1", "-shared", "-fPIC", "-Wall", "-Wextra", "-Werror", f"-I{INCLUDE}"]
    subprocess.run([*compiler, *flags, str(probe), "-o", str(lib)], check=True)
    return ctypes.CDLL(str(lib))


def test_accessors_read_what_the_context_points_at(tmp_path: Path) -> None:
    lib = _native_library(tmp_path)
    mem = Memory()
    n_rows, n_scen, n_months, stride = 3, 2, 4, 6
    ids = np.array([10, -(2**40), 2**62], np.int64)
    ages = np.array([20, 45, 99], np.int32)
    smoker = np.array([2, 0, 1], np.int32)
    fund = np.array([1.5, -2.25, 1e300])
    qx = np.arange(6, dtype=np.float64) / 8
    yc = np.array([0.01, 0.02])
    eq = np.zeros((n_scen, stride))
    ir = np.arange(n_scen * stride, dtype=np.float64).reshape(n_scen, stride) / 4
    columns = mem.put(b"".join([
        _array(mem.put(ids.tobytes()), 2, (n_rows,)),
        _array(mem.put(ages.tobytes()), 1, (n_rows,)),
        _array(mem.put(smoker.tobytes()), 4, (n_rows,)),
        _array(mem.put(fund.tobytes()), 3, (n_rows,)),
    ]))  # fmt: skip
    tables = mem.put(_array(mem.put(qx.tobytes()), 3, (3, 2), (20, 0)) + _array(mem.put(yc.tobytes()), 3, (2,)))
    params = mem.put(struct.pack("<dqQ", 0.035, -7, 2**64 - 3))
    scenario_inputs = mem.put(_array(mem.put(eq.tobytes()), 3, eq.shape) + _array(mem.put(ir.tobytes()), 3, ir.shape))
    partials = mem.put(np.array([0.0, 0.0, 0.0, 4.5]).tobytes())
    header = [2, n_rows, n_scen, n_months, 1024, 4, columns, 2, tables, 3, params, 2, scenario_inputs, 2, partials]
    ctx_bytes = struct.pack("<18I", *header, 0, 0, 0) + bytes(56)
    assert len(ctx_bytes) == 128
    ctx = mem.put(ctx_bytes)

    def call(name: str, restype: type, *args: int) -> object:
        f = getattr(lib, name)
        f.restype = restype
        return f(ctypes.c_void_p(mem.base), ctypes.c_uint32(ctx), *(ctypes.c_uint32(a) for a in args))

    assert call("p_check", ctypes.c_int32) == 0
    assert [call("p_id", ctypes.c_int64, i) for i in range(n_rows)] == ids.tolist()
    assert [call("p_age", ctypes.c_int32, i) for i in range(n_rows)] == ages.tolist()
    assert [call("p_smoker", ctypes.c_int32, i) for i in range(n_rows)] == smoker.tolist()
    assert [call("p_fund", ctypes.c_double, i) for i in range(n_rows)] == fund.tolist()
    assert [call("p_qx", ctypes.c_double, i) for i in range(6)] == qx.tolist()
    assert [call("p_yc", ctypes.c_double, i) for i in range(2)] == yc.tolist()
    assert [call("p_qx_origin", ctypes.c_int32, a) for a in range(2)] == [20, 0]
    assert [call("p_qx_size", ctypes.c_uint32, a) for a in range(2)] == [3, 2]
    assert call("p_rate", ctypes.c_double) == 0.035
    assert call("p_n_paths", ctypes.c_int64) == -7
    assert call("p_seed", ctypes.c_uint64) == 2**64 - 3
    assert call("p_ir", ctypes.c_double, 1, 3) == ir[1, 3]
    assert call("p_eq_stride", ctypes.c_uint32) == stride
    assert call("p_partial", ctypes.c_double, 3) == 4.5

    def check_with(offset: int, fmt: str, value: int) -> object:
        changed = bytearray(ctx_bytes)
        struct.pack_into(fmt, changed, offset, value)
        ctypes.memmove(mem.base + ctx, bytes(changed), len(changed))
        try:
            return call("p_check", ctypes.c_int32)
        finally:
            ctypes.memmove(mem.base + ctx, ctx_bytes, len(ctx_bytes))

    assert check_with(0, "<I", 1) == 1  # another ABI version
    assert check_with(16, "<I", 512) == 1  # another block size
    assert check_with(20, "<I", 3) == 1  # a column short
    assert check_with(52, "<I", 1) == 1  # an output short
    assert check_with(12, "<I", stride + 1) == 1  # scenario rows shorter than n_months
    ctypes.memmove(mem.base + tables + 4, struct.pack("<I", 2), 4)  # qx's type: int64
    assert call("p_check", ctypes.c_int32) == 1
