"""Device helpers: retain_freed_memory keeps per-batch CPU tensors off fresh pages."""

from __future__ import annotations

import resource
import subprocess
import sys
import textwrap

import pytest

from shogitrain.device import retain_freed_memory

# a fresh interpreter: the setting is process-wide and one-way, so the default case needs its own
_FAULTS = textwrap.dedent("""
    import resource, sys
    import numpy as np
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
    out = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_retain_freed_memory_stops_page_faults_on_reused_sizes():
    retained = _faults("retain")
    default = _faults("default")
    # faults per encoder call at batch 1024. Default glibc: the call's temporaries are freed at
    # its end, the top of the heap is trimmed, and the next call faults them in again (thousands
    # of pages); retained: the heap keeps them
    assert default > 500
    assert retained < default // 20


def test_retain_freed_memory_is_idempotent():
    first = retain_freed_memory()
    assert retain_freed_memory() is first
    assert isinstance(first, bool)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss > 0
