"""Device helpers: retain_freed_memory keeps per-batch CPU tensors off fresh pages."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from shogitrain.device import retain_freed_memory

# a fresh interpreter: the setting is process-wide and one-way, so the default case needs its own
_FAULTS = textwrap.dedent("""
    import resource, sys
    from shogitrain.device import retain_freed_memory
    from shogitrain.features import encode_rows
    from shogitrain.shards import format as fmt
    if sys.argv[1] == "retain":
        assert retain_freed_memory() and retain_freed_memory()
    rows = fmt.rows_from_sfens(["startpos"] * 1024)
    for _ in range(3):
        encode_rows(rows)
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        encode_rows(rows)
    print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) // 20)
""")


def _faults(mode: str) -> int:
    # glibc's own thresholds adapt to the history of the heap, so its default fault count varies
    # from run to run (5 to 6,700 a call seen); fixed at glibc's starting values (128 KB) every
    # block above them is a fresh mmap, every time — and retain_freed_memory must override that
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072")
    out = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True,
                         env=env)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_retain_freed_memory_stops_page_faults_on_reused_sizes():
    retained = _faults("retain")
    default = _faults("default")
    # faults per encoder call at batch 1024: without it, the call's temporaries are handed back to
    # the OS when freed and faulted in again by the next call (thousands of pages); retained: the
    # heap keeps them
    assert default > 1000
    assert retained < default // 20


def test_retain_freed_memory_is_idempotent():
    first = retain_freed_memory()
    assert retain_freed_memory() is first
    assert isinstance(first, bool)
