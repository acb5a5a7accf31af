"""Where the tests find the shared math benchmark sets.

``$NEMO_RED_BENCHMARK_DATA``, by default ``../shared/data/benchmarks`` next to the
repository; tests that need it skip with :data:`MISSING_REASON` when it is absent.
"""

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(
    os.environ.get("NEMO_RED_BENCHMARK_DATA", REPO_ROOT / ".." / "shared" / "data" / "benchmarks")
).resolve()
MISSING_REASON = f"benchmark data not found at {DATA_DIR} (set NEMO_RED_BENCHMARK_DATA)"
