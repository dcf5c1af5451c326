"""The Ray engine: shards encoded by a Ray Data actor pool (one model per actor), writing the local engine's files."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from mlembed.corpus.encoder import EncodeJob, ShardEncoder


class _RayShardWorker:
    """A Ray Data actor: one model per actor, one shard per call."""

    def __init__(self, job: EncodeJob, threads: int) -> None:
        self.encoder = ShardEncoder(job, threads=threads)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = [self.encoder.encode_shard(int(i)) for i in batch["shard"]]
        return {"shard": np.asarray(batch["shard"]), "rows": np.asarray(rows, dtype=np.int64)}


def probe_in_worker(job: EncodeJob, sample: list[str], threads: int | None = None) -> tuple[dict, list, Any]:
    """`ShardEncoder.probe` in a Ray task: the driver never loads the model (it may have no GPU)."""
    return ShardEncoder(job, threads=threads).probe(sample)


def ray_start(address: str | None, cpus: float) -> tuple[Any, bool]:
    """The running Ray instance, the cluster at `address`, or a new local one sized for the actor pool; and
    whether this call started it."""
    import ray

    if ray.is_initialized():
        return ray, False
    if address:
        ray.init(address=address, include_dashboard=False)
    else:
        ray.init(num_cpus=max(1, int(np.ceil(cpus))), include_dashboard=False, log_to_driver=False)
    return ray, True


def run_ray(
    job: EncodeJob,
    pending: list[int],
    num_workers: int,
    num_cpus: float,
    num_gpus: float,
    progress: Any,
    finished: Callable[[int, int], None],
) -> None:
    import ray.data

    if not pending:
        return
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # our own bar counts documents
    shards = ray.data.from_items([{"shard": i} for i in pending], override_num_blocks=len(pending))
    results = shards.map_batches(
        _RayShardWorker,
        fn_constructor_kwargs={"job": job, "threads": max(1, int(num_cpus))},
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=min(num_workers, len(pending))),
        num_cpus=num_cpus,
        **({"num_gpus": num_gpus} if num_gpus else {}),
    )
    for row in results.iter_rows():
        finished(int(row["shard"]), int(row["rows"]))
        progress.update(int(row["rows"]))
