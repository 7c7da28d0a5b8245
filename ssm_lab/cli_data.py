"""`ssm-lab data info` (each data set and split: where it would come from, how many images) and `data fetch`."""
from __future__ import annotations

import argparse
import sys

from .datasets.info import DATASETS, MODEL_DATASETS

SPLITS_SHOWN = ("train", "val", "test")


def add_data_parser(sub) -> None:
    d = sub.add_parser("data", help="where the data sets come from; download and verify them ahead of time")
    dsub = d.add_subparsers(dest="data_command", required=True, help="info or fetch")
    info = dsub.add_parser("info", help="each data set and split: where it would come from now, and its size")
    info.add_argument("--data-dir", help="a data folder to consider first (default: $SSM_LAB_DATA)")
    info.set_defaults(func=cmd_data_info)
    fetch = dsub.add_parser("fetch", help="download and verify Hub data sets into the local cache (for offline use, "
                            "or at a Docker build)")
    fetch.add_argument("--dataset", nargs="+", choices=list(DATASETS), default=list(MODEL_DATASETS),
                       help="data sets (default: those with shipped models)")
    fetch.add_argument("--split", nargs="+", choices=["train", "test"], default=["test"], help="Hub splits")
    fetch.add_argument("--revision", help="a Hub branch, tag or commit instead of the pinned one (one data set)")
    fetch.set_defaults(func=cmd_data_fetch)


def cmd_data_info(args: argparse.Namespace) -> None:
    from .datasets.builtin import RESOLUTION_ORDER, locate

    print("Order: " + " -> ".join(RESOLUTION_ORDER))
    rows = [("data set", "split", "images", "source")]
    for name, info in DATASETS.items():
        for split in SPLITS_SHOWN:
            where, size = locate(name, split, args.data_dir)
            rows.append((info.display_name, split, size, where))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths)) + "  " + row[3])


def cmd_data_fetch(args: argparse.Namespace) -> None:
    from .datasets.base import cache_dir, is_offline
    from .datasets.hub import fetch_hub_split, pinned_revision

    if args.revision and len(args.dataset) > 1:
        raise ValueError("--revision names one data set's revision: pass a single --dataset with it")
    if is_offline():
        raise ValueError("offline (HF_HUB_OFFLINE or SSM_LAB_OFFLINE is set): unset it to download")
    failures = []
    for name in args.dataset:
        info = DATASETS[name]
        for split in args.split:
            try:
                images, _ = fetch_hub_split(info, split, args.revision, offline=False)
            except Exception as exc:  # one failure must not hide the others; each is reported and counted
                failures.append(f"{info.display_name} {split}: {exc}")
                print(f"failed: {failures[-1]}", file=sys.stderr, flush=True)
                continue
            print(f"{info.display_name} {split}: {len(images):,} images verified "
                  f"({info.hub.repo_id}@{pinned_revision(info, args.revision)})", flush=True)
    if failures:
        raise ValueError(f"{len(failures)} of {len(args.dataset) * len(args.split)} downloads failed")
    print(f"cached under {cache_dir() / 'hub'}")
