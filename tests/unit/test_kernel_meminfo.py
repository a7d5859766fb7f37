"""/proc/meminfo: kB sizes into bytes, counts kept, the node snapshot's keys required."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Dict, Tuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

from remediator.errors import KernelFileMissing, KernelParseError
from remediator.kernel.meminfo import REQUIRED_KEYS, parse_meminfo, read_meminfo
from tests.fakefs import MEMINFO_NO_SWAP, FakeKernel

# The shape of a real /proc/meminfo: keys with parentheses, counts without a unit.
WITH_SWAP_AND_HUGEPAGES = (
    "MemTotal:       24684096 kB\n"
    "MemFree:        24437356 kB\n"
    "MemAvailable:   24381108 kB\n"
    "Buffers:            3796 kB\n"
    "Cached:            71292 kB\n"
    "Active(anon):      10240 kB\n"
    "SwapTotal:       2097148 kB\n"
    "SwapFree:        2000000 kB\n"
    "SReclaimable:      93276 kB\n"
    "HugePages_Total:       0\n"
    "HugePages_Free:        0\n"
    "Hugepagesize:       2048 kB\n"
)


@pytest.fixture
def kernel(tmp_path: Path) -> FakeKernel:
    return FakeKernel(tmp_path)


def test_parse_meminfo_converts_kib_to_bytes() -> None:
    info = parse_meminfo(MEMINFO_NO_SWAP)
    assert info.mem_total_bytes == 16384000 * 1024
    assert info.mem_available_bytes == 8192000 * 1024
    assert info.swap_total_bytes == 0
    assert info.swap_free_bytes == 0
    assert info.slab_reclaimable_bytes == 204800 * 1024
    assert info.values["MemFree"] == 1024000 * 1024


def test_counts_without_a_unit_are_kept_as_counts_and_odd_keys_are_kept() -> None:
    info = parse_meminfo(WITH_SWAP_AND_HUGEPAGES)
    assert info.values["HugePages_Total"] == 0
    assert info.values["Hugepagesize"] == 2048 * 1024
    assert info.values["Active(anon)"] == 10240 * 1024
    assert info.swap_total_bytes == 2097148 * 1024


def test_a_missing_required_key_is_a_parse_error_naming_it() -> None:
    text = MEMINFO_NO_SWAP.replace("MemAvailable:    8192000 kB\n", "")
    with pytest.raises(KernelParseError, match="MemAvailable"):
        parse_meminfo(text, "/proc/meminfo")


@pytest.mark.parametrize(
    "line", ["Cached: 12 MB", "Cached 12 kB", "Cached: lots kB", "Cached:", ": 12 kB", "Cached: 1 kB extra"]
)
def test_a_line_not_in_meminfo_format_is_a_parse_error(line: str) -> None:
    with pytest.raises(KernelParseError):
        parse_meminfo(MEMINFO_NO_SWAP + line + "\n")


def test_read_meminfo_reads_the_proc_root(kernel: FakeKernel) -> None:
    assert read_meminfo(kernel.roots).mem_total_bytes == 16384000 * 1024


def test_read_meminfo_without_the_file_is_file_missing(kernel: FakeKernel) -> None:
    (kernel.proc_root / "meminfo").unlink()
    with pytest.raises(KernelFileMissing):
        read_meminfo(kernel.roots)


_MEMINFO_PIECES = st.sampled_from(
    ["MemTotal", "SwapFree", ":", " ", "\n", "kB", "MB", "0", "77", "(", "é", "\u0661"]
)


@given(st.one_of(st.text(), st.lists(_MEMINFO_PIECES, max_size=40).map("".join)))
def test_parse_meminfo_raises_nothing_but_parse_errors(text: str) -> None:
    with contextlib.suppress(KernelParseError):
        parse_meminfo(text, "fuzz")


_KEY = st.from_regex(r"[A-Za-z][A-Za-z0-9_()]{0,20}", fullmatch=True)
_ENTRY = st.tuples(st.integers(min_value=0, max_value=2**50), st.booleans())  # (number, in kB?)


@given(
    st.fixed_dictionaries(dict.fromkeys(REQUIRED_KEYS, _ENTRY)),
    st.dictionaries(_KEY.filter(lambda k: k not in REQUIRED_KEYS), _ENTRY, max_size=10),
)
def test_generated_meminfo_round_trips(
    required: Dict[str, Tuple[int, bool]], extra: Dict[str, Tuple[int, bool]]
) -> None:
    entries = {**required, **extra}
    text = "".join(f"{k}: {n:>12}{' kB' if kib else ''}\n" for k, (n, kib) in entries.items())
    info = parse_meminfo(text)
    assert dict(info.values) == {k: n * 1024 if kib else n for k, (n, kib) in entries.items()}
