"""What shipping code costs: bundle size and upload time for examples/.

Two bundles: examples/ packed as a project of its own, and what the SDK really ships for
examples/fanout.py (its project root: this repository, with the usual ignores). For each: files,
bytes before and after compression, the time to pack, the first upload (HasBundle, then UploadBundle
in chunks), a later run's check (HasBundle only: the upload is skipped), the runtime's fetch
(GetBundle) and its safe unpack. Against a private Redis and `fanout server` as a subprocess
(bench/lone_server.py). Median of REPEATS; writes bench/results/bundle-<UTC timestamp>.json.
Figures are printed, never asserted.

    python -m bench.bundle
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from bench.lone_server import lone_server
from fanout.bundles import pack, unpack
from fanout.client import Client
from fanout.config import ClientConfig
from fanout.quota import keys

REPEATS = 5
ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


@dataclass(frozen=True)
class BundleFigures:
    name: str
    root: str
    files: int
    source_bytes: int
    bundle_bytes: int
    pack_ms: float
    first_upload_ms: float  # HasBundle + UploadBundle
    later_check_ms: float  # HasBundle only: the upload is skipped
    fetch_ms: float  # GetBundle
    unpack_ms: float


def _median_ms(step: Callable[[], Any], before: Callable[[], Any] = lambda: None) -> float:
    times = []
    for _ in range(REPEATS):
        before()
        started = time.perf_counter()
        step()
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 2)


def measure(client: Client, redis_url: str, tenant: str, name: str, root: Path) -> BundleFigures:
    bundle = pack.pack(root)
    store = redis.Redis.from_url(redis_url)
    tenant_keys = keys.TenantKeys(tenant)

    def forget() -> None:  # each first upload finds nothing there
        store.delete(tenant_keys.bundle(bundle.digest), tenant_keys.bundles)

    def first_upload() -> None:
        if not client.has_bundle(bundle.digest):
            client.upload_bundle(bundle.digest, bundle.data)

    upload_ms = _median_ms(first_upload, before=forget)
    first_upload()
    with tempfile.TemporaryDirectory(prefix="bundle-bench-") as tmp:
        counter = iter(range(REPEATS))
        unpack_ms = _median_ms(lambda: unpack.install(bundle.digest, bundle.data, Path(tmp, str(next(counter)))))
    store.close()
    return BundleFigures(
        name=name,
        root=str(root.relative_to(ROOT)) or ".",
        files=bundle.files,
        source_bytes=sum(path.stat().st_size for _, path in pack.files_of(root)),
        bundle_bytes=len(bundle.data),
        pack_ms=_median_ms(lambda: pack.pack(root)),
        first_upload_ms=upload_ms,
        later_check_ms=_median_ms(lambda: client.has_bundle(bundle.digest)),
        fetch_ms=_median_ms(lambda: client.get_bundle(bundle.digest)),
        unpack_ms=unpack_ms,
    )


def run() -> list[BundleFigures]:
    shipped_root = pack.source_root(str(ROOT / "examples" / "fanout.py"))
    assert shipped_root is not None
    with lone_server("bundle-bench-") as server:
        with Client(ClientConfig(endpoint=server.endpoint, token=server.tenant_token("bench"))) as client:
            return [
                measure(client, server.redis_url, "bench", "examples/ as a project", ROOT / "examples"),
                measure(client, server.redis_url, "bench", "what the SDK ships for examples/fanout.py", shipped_root),
            ]


def table(figures: list[BundleFigures]) -> str:
    lines = []
    for f in figures:
        lines += [
            f"{f.name} (root {f.root}):",
            f"  {f.files} files, {f.source_bytes / 1024:.1f} KiB source -> {f.bundle_bytes / 1024:.1f} KiB bundle",
            f"  pack {f.pack_ms:.1f} ms, first upload {f.first_upload_ms:.1f} ms, later runs' check "
            f"{f.later_check_ms:.1f} ms (upload skipped), fetch {f.fetch_ms:.1f} ms, unpack {f.unpack_ms:.1f} ms",
        ]
    return "\n".join(lines)


def main() -> None:
    figures = run()
    print(f"code bundles, median of {REPEATS}:")
    print(table(figures))
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"bundle-{stamp}.json"
    path.write_text(json.dumps({"repeats": REPEATS, "bundles": [asdict(f) for f in figures]}, indent=2) + "\n")
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
