"""Store throughput, as ratios against baselines measured in the same run.

    python bench/bench_store.py                  # 1 GiB in large files, 10,000 small files
    python bench/bench_store.py --size 128MiB --small-files 1000   # a quick run

Upload and download of (a) SIZE in a few large files and (b) N small files:
- on the local store, Conjure's Store against `cp -r`;
- on S3 (a moto_server started here on 127.0.0.1), Conjure's Store (s3fs) against
  plain boto3 `upload_file` / `download_file`, one call per file.
A ratio above 1 means Conjure is faster than the baseline. Peak memory (RSS) of this
process is printed too: transfers stream, so it stays far below SIZE.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import Row

from conjure.infra.store import Store
from tests import emulators


def parse_size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    if t and t[-1] in units:
        return int(float(t[:-1]) * units[t[-1]])
    return int(t)


def make_files(root: Path, count: int, size: int) -> None:
    root.mkdir(parents=True)
    block = os.urandom(min(size, 1 << 20))
    for i in range(count):
        sub = root / f"{i // 1000:03d}"
        sub.mkdir(exist_ok=True)
        with open(sub / f"f{i:06d}.bin", "wb") as f:
            left = size
            while left > 0:
                n = min(left, len(block))
                f.write(block[:n])
                left -= n


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def files_of(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_local(work: Path, count: int, size: int, repeats: int, workers: int = 16) -> list[Row]:
    """10,000 small files up to and down from the local store, against `cp -r`, in pairs."""
    src = work / "small-local"
    make_files(src, count, size)
    st = Store(f"file://{work}/store-local", workers=workers)
    up, up_base, down, down_base = [], [], [], []
    for i in range(repeats):
        key = f"uploads/set{i}"
        up_base.append(timed(lambda: subprocess.run(["cp", "-r", str(src), str(work / "cp-up")],
                                                    check=True)))  # fmt: skip
        up.append(timed(lambda: st.put_tree(src, key)))
        down_base.append(timed(lambda: subprocess.run(
            ["cp", "-r", f"{work}/store-local/{key}", str(work / "cp-down")], check=True)))  # fmt: skip
        down.append(timed(lambda: st.get_tree(key, work / "down")))
        for d in (work / "down", work / "cp-down", work / "cp-up", work / "store-local" / key):
            shutil.rmtree(d)
    mib = count * size / 2**20
    label = f"{count:,} × {size // 1024} KiB"
    return [
        Row(f"local store upload {label}", "MiB/s", [mib / t for t in up],
            [mib / t for t in up_base], "`cp -r`", higher_is_better=True, goal="≥ 1.0"),
        Row(f"local store download {label}", "MiB/s", [mib / t for t in down],
            [mib / t for t in down_base], "`cp -r`", higher_is_better=True, goal="≥ 1.0"),
    ]  # fmt: skip


def measure_s3(work: Path, count: int, size: int, repeats: int, workers: int = 16) -> list[Row]:
    """COUNT large files up to S3 (a moto_server started here), against boto3's
    `upload_file` (its transfer manager, default settings), one call per file, in pairs."""
    import boto3

    src = work / "large-s3"
    make_files(src, count, size)
    files = files_of(src)
    ours, base = [], []
    with emulators.moto(work) as endpoint:
        creds = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **creds)
        s3.create_bucket(Bucket="bench")
        st = Store("s3://bench/conjure", workers=workers, endpoint_url=endpoint,
                   key="testing", secret="testing")  # fmt: skip
        for i in range(repeats):

            def boto_up() -> None:
                for p in files:
                    s3.upload_file(str(p), "bench", f"boto/{i}/{p.relative_to(src)}")

            base.append(timed(boto_up))
            ours.append(timed(lambda: st.put_tree(src, f"uploads/set{i}")))
    mib = count * size / 2**20
    return [
        Row(f"S3 (moto) upload {count} × {size >> 20} MiB", "MiB/s", [mib / t for t in ours],
            [mib / t for t in base], "boto3 `upload_file`", higher_is_better=True, goal="≥ 1.0"),
    ]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--size", default="1GiB", help="total of the large files (default 1GiB)")
    ap.add_argument("--large-files", type=int, default=4, help="how many large files")
    ap.add_argument("--small-files", type=int, default=10_000, help="how many small files")
    ap.add_argument("--small-size", default="4KiB", help="size of each small file")
    ap.add_argument("--workers", type=int, default=16, help="Conjure's transfer_workers")
    ap.add_argument("--only", choices=["local", "s3"], help="one backend only")
    args = ap.parse_args()
    size = parse_size(args.size)
    small_size = parse_size(args.small_size)

    work = Path(tempfile.mkdtemp(prefix="conjure-bench-"))
    rows: list[tuple[str, str, int, float, float]] = []
    try:
        large = work / "large"
        small = work / "small"
        make_files(large, args.large_files, size // args.large_files)
        make_files(small, args.small_files, small_size)
        sets = {
            f"{args.large_files} x {size // args.large_files >> 20} MiB": (large, size),
            f"{args.small_files} x {small_size} B": (small, args.small_files * small_size),
        }
        print(f"data: {', '.join(sets)} in {work}", flush=True)

        if args.only in (None, "local"):
            st = Store(f"file://{work}/store", workers=args.workers)
            for i, (name, (src, nbytes)) in enumerate(sets.items()):
                key = f"uploads/set{i}"
                ours = timed(lambda: st.put_tree(src, key))
                base = timed(
                    lambda: subprocess.run(
                        ["cp", "-r", str(src), str(work / f"cp-up{i}")], check=True
                    )
                )
                rows.append(("local vs cp -r", f"upload {name}", nbytes, ours, base))
                ours = timed(lambda: st.get_tree(key, work / f"down{i}"))
                base = timed(
                    lambda: subprocess.run(
                        ["cp", "-r", f"{work}/store/{key}", str(work / f"cp-down{i}")], check=True
                    )
                )
                rows.append(("local vs cp -r", f"download {name}", nbytes, ours, base))
                for d in (work / f"down{i}", work / f"cp-down{i}", work / f"cp-up{i}"):
                    shutil.rmtree(d)
            shutil.rmtree(work / "store")

        if args.only in (None, "s3"):
            import boto3

            with emulators.moto(work) as endpoint:
                creds = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
                s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **creds)
                s3.create_bucket(Bucket="bench")
                st = Store(
                    "s3://bench/conjure",
                    workers=args.workers,
                    endpoint_url=endpoint,
                    key="testing",
                    secret="testing",
                )
                for i, (name, (src, nbytes)) in enumerate(sets.items()):
                    key = f"uploads/set{i}"
                    files = files_of(src)
                    ours = timed(lambda: st.put_tree(src, key))

                    def boto_up() -> None:
                        for p in files:
                            s3.upload_file(str(p), "bench", f"boto/{i}/{p.relative_to(src)}")

                    base = timed(boto_up)
                    rows.append(("s3 (moto) vs boto3", f"upload {name}", nbytes, ours, base))
                    ours = timed(lambda: st.get_tree(key, work / f"down{i}"))

                    def boto_down() -> None:
                        for p in files:
                            rel = p.relative_to(src)
                            dest = work / f"boto-down{i}" / rel
                            dest.parent.mkdir(parents=True, exist_ok=True)
                            s3.download_file("bench", f"boto/{i}/{rel}", str(dest))

                    base = timed(boto_down)
                    rows.append(("s3 (moto) vs boto3", f"download {name}", nbytes, ours, base))
                    shutil.rmtree(work / f"down{i}")
                    shutil.rmtree(work / f"boto-down{i}")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print()
    print(
        f"{'backend':<20} {'operation':<28} {'conjure MiB/s':>14} {'baseline MiB/s':>15} {'ratio':>6}"
    )
    for backend, op, nbytes, ours, base in rows:
        print(
            f"{backend:<20} {op:<28} {nbytes / ours / 2**20:>14.1f} "
            f"{nbytes / base / 2**20:>15.1f} {base / ours:>6.2f}"
        )
    print(
        f"\npeak RSS of this process: {peak_rss_mib():.0f} MiB (data moved: "
        f"{size >> 20} MiB in large files)"
    )


if __name__ == "__main__":
    main()
