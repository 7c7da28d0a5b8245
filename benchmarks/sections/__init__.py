"""The benchmark sections, in report order: key -> module with `run(settings) -> Section`."""
from __future__ import annotations

from . import (
               app_roundtrip,
               autoattack_overhead,
               mamba_scan,
               paper_scale,
               pgd_batch,
               pgd_cache,
               s4_kernel,
               shipped,
               throughput,
)

SECTIONS = {module.KEY: module for module in (pgd_cache, mamba_scan, s4_kernel, throughput, pgd_batch,
                                              autoattack_overhead, shipped, app_roundtrip, paper_scale)}
