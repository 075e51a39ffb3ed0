"""The synchronous facade: blocking builds and sessions, publication from producer threads with
a bounded non-blocking backlog, and an orderly close.

See docs/sync-api.md. Runs on real time with tiny waits: ``python examples/sync_api.py``.
"""

from __future__ import annotations

import threading
import time

from coalestra import (
    CallableSource,
    FetchContext,
    ResourceKey,
    ResourceUpdate,
    SnapshotBuilder,
    SnapshotRequest,
    SubmissionBacklogFullError,
    SyncSnapshotBuilder,
)

ACCOUNT = ResourceKey("account", "balance", "main")
HEALTH = ResourceKey("market", "health")


def read_account(key: ResourceKey, context: FetchContext) -> dict[str, float]:
    time.sleep(0.005)  # a blocking driver call: it runs in a worker thread, not on the loop
    return {"USDT": 1000.0}


def price(symbol: str) -> ResourceKey:
    return ResourceKey("market", "price", symbol)


def producer(sync_builder: SyncSnapshotBuilder, symbol: str, counts: dict[str, int]) -> None:
    """A stream thread: submits without waiting, sheds load when the backlog is full."""
    for tick in range(20):
        update = ResourceUpdate(price(symbol), 100.0 + tick, source="stream")
        try:
            sync_builder.publisher.submit_publish_update(update)
            counts["accepted"] += 1
        except SubmissionBacklogFullError:
            counts["shed"] += 1


def main() -> None:
    builder = SnapshotBuilder(
        [
            CallableSource(
                name="db", priority=10, supports=lambda key: key == ACCOUNT, fetcher=read_account
            )
        ]
    )
    with SyncSnapshotBuilder(builder, max_pending_submissions=16) as sync_builder:
        snapshot = sync_builder.build([ACCOUNT])
        print(f"== build: {snapshot.value(ACCOUNT)} from {snapshot[ACCOUNT].source}")

        request = SnapshotRequest(required=[ACCOUNT], optional=[HEALTH])
        snapshot = sync_builder.build_request(request, deadline_seconds=1.0)
        print(f"== build_request: complete={snapshot.complete}, errors={len(snapshot.errors)}")

        with sync_builder.session(snapshot_id="cycle-7") as session:
            stage = session.resolve([ACCOUNT])
            print(f"== session {stage.snapshot_id}: {stage.value(ACCOUNT)}")

        result = sync_builder.publisher.publish(price("BTCUSDT"), 65000.0, source="stream")
        print(f"== blocking publish: {result.status.value}")

        counts = {"accepted": 0, "shed": 0}
        threads = [
            threading.Thread(target=producer, args=(sync_builder, symbol, counts))
            for symbol in ("ETHUSDT", "SOLUSDT", "XRPUSDT")
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        sync_builder.publisher.flush(timeout_seconds=1.0)
        print(
            f"== 3 producer threads: {counts['accepted']} submissions accepted,"
            f" {counts['shed']} shed at the backlog limit of {sync_builder.max_pending_submissions}"
        )
        assert sync_builder.pending_submissions == 0

        prices = sync_builder.build([price("ETHUSDT"), price("SOLUSDT")], strict=False)
        latest = {key.subject: value.value for key, value in prices.items()}
        print(f"== the latest accepted prices, read from the cache: {latest}")

        invalidation = sync_builder.publisher.submit_invalidate(
            price("BTCUSDT"), reason="stream-gap"
        )
        invalidation.result(timeout=1.0)
        health = sync_builder.health_snapshot()
        print(
            f"== health: pending={health.pending_submissions}/{health.max_pending_submissions},"
            f" cache size={health.cache.size if health.cache else None}"
        )
    print(f"== closed: facade={sync_builder.closed}, builder={builder.closed}")
    assert builder.closed


if __name__ == "__main__":
    main()
