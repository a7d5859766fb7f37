"""PSI files: the parser against kernel samples and generated text, the readers against a fake tree."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Optional, Tuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

from remediator.errors import CgroupGone, KernelFileMissing, KernelParseError
from remediator.kernel.psi import parse_pressure, read_cgroup_pressure, read_node_pressure
from remediator.readings import PressureLine
from tests.fakefs import SEED_PRESSURE, FakeKernel, pressure_text

SEED = "system.slice/seed.service"


@pytest.fixture
def kernel(tmp_path: Path) -> FakeKernel:
    return FakeKernel(tmp_path)


def test_parse_pressure_reads_the_seed_numbers_exactly() -> None:
    pressure = parse_pressure(SEED_PRESSURE, "seed")
    assert pressure.some == PressureLine(avg10=78.20, avg60=41.11, avg300=12.02, total_us=183742991)
    assert pressure.full == PressureLine(avg10=23.90, avg60=11.03, avg300=3.01, total_us=45112887)


def test_missing_full_line_reads_as_none() -> None:
    pressure = parse_pressure("some avg10=1.50 avg60=0.70 avg300=0.10 total=12345\n")
    assert pressure.some.total_us == 12345
    assert pressure.full is None


def test_unknown_fields_lines_and_trailing_whitespace_are_ignored() -> None:
    text = (
        "some avg10=1.00 avg60=2.00 avg300=3.00 total=4 avg3600=9.99   \n"
        "\n"
        "full avg10=0.50 avg60=0.25 avg300=0.12 total=7\t\n"
        "burst avg10=100.00 total=1\n"
        "   \n"
    )
    pressure = parse_pressure(text)
    assert pressure.some == PressureLine(1.0, 2.0, 3.0, 4)
    assert pressure.full == PressureLine(0.5, 0.25, 0.12, 7)


def test_missing_some_line_is_a_parse_error_naming_the_source() -> None:
    with pytest.raises(KernelParseError, match="/proc/pressure/memory") as info:
        parse_pressure("full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n", "/proc/pressure/memory")
    assert "some" in info.value.message


def test_empty_file_is_a_parse_error() -> None:
    with pytest.raises(KernelParseError):
        parse_pressure("")


@pytest.mark.parametrize(
    "some_line",
    [
        "some avg10=abc avg60=0.00 avg300=0.00 total=0",
        "some avg10=nan avg60=0.00 avg300=0.00 total=0",
        "some avg10=inf avg60=0.00 avg300=0.00 total=0",
        "some avg10=1e3 avg60=0.00 avg300=0.00 total=0",
        "some avg10=1_0.00 avg60=0.00 avg300=0.00 total=0",
        "some avg10=0.00 avg60=0.00 avg300=0.00 total=-1",
        "some avg10=0.00 avg60=0.00 avg300=0.00 total=1.5",
        "some avg10=0.00 avg60=0.00 avg300=0.00 total=",
        "some avg10=0.00 avg60=0.00 avg300=0.00",
        "some avg10=0.00 avg60 avg300=0.00 total=0",
    ],
)
def test_malformed_some_line_is_a_parse_error(some_line: str) -> None:
    with pytest.raises(KernelParseError, match="src"):
        parse_pressure(some_line + "\n", "src")


def test_repeated_some_line_is_refused_rather_than_guessed() -> None:
    line = "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
    with pytest.raises(KernelParseError, match="more than one"):
        parse_pressure(line + line)


def test_read_cgroup_pressure_reads_the_cgroups_memory_pressure(kernel: FakeKernel) -> None:
    kernel.add_seed(SEED)
    assert read_cgroup_pressure(kernel.roots, SEED) == parse_pressure(SEED_PRESSURE)


def test_read_node_pressure_reads_proc_pressure_memory(kernel: FakeKernel) -> None:
    kernel.set_pressure(None, pressure_text((5.0, 4.0, 3.0, 999), None))
    pressure = read_node_pressure(kernel.roots)
    assert pressure.some == PressureLine(5.0, 4.0, 3.0, 999)
    assert pressure.full is None


def test_removed_cgroup_reads_as_cgroup_gone(kernel: FakeKernel) -> None:
    shutil.rmtree(kernel.add_seed(SEED))
    with pytest.raises(CgroupGone):
        read_cgroup_pressure(kernel.roots, SEED)


def test_missing_pressure_file_in_existing_cgroup_is_file_missing(kernel: FakeKernel) -> None:
    (kernel.add_seed(SEED) / "memory.pressure").unlink()
    with pytest.raises(KernelFileMissing):
        read_cgroup_pressure(kernel.roots, SEED)


# Text built from the pieces PSI files are made of reaches deeper into the
# parser than uniformly random text does.
_PSI_PIECES = st.sampled_from(
    [
        "some",
        "full",
        " ",
        "\n",
        "\t",
        "avg10=",
        "avg60=",
        "avg300=",
        "total=",
        "=",
        "0",
        "12",
        ".",
        "-",
        "x",
        "é",
        "\u0661",
    ]
)
_PSI_LIKE_TEXT = st.lists(_PSI_PIECES, max_size=40).map("".join)


@given(st.one_of(st.text(), _PSI_LIKE_TEXT))
def test_parse_pressure_raises_nothing_but_parse_errors(text: str) -> None:
    with contextlib.suppress(KernelParseError):
        parse_pressure(text, "fuzz")


_PERCENT_HUNDREDTHS = st.integers(min_value=0, max_value=10_000)
_TOTAL = st.integers(min_value=0, max_value=2**64 - 1)
_LINE = st.tuples(_PERCENT_HUNDREDTHS, _PERCENT_HUNDREDTHS, _PERCENT_HUNDREDTHS, _TOTAL)


def _as_percent(line: Tuple[int, int, int, int]) -> Tuple[float, float, float, int]:
    return (line[0] / 100, line[1] / 100, line[2] / 100, line[3])


@given(_LINE, st.one_of(st.none(), _LINE))
def test_generated_pressure_text_round_trips(
    some: Tuple[int, int, int, int], full: Optional[Tuple[int, int, int, int]]
) -> None:
    some_values = _as_percent(some)
    full_values = _as_percent(full) if full is not None else None
    pressure = parse_pressure(pressure_text(some_values, full_values))
    assert pressure.some == PressureLine(*some_values)
    assert pressure.full == (PressureLine(*full_values) if full_values is not None else None)
