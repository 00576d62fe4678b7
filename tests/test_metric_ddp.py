"""TBPSRetrievalMetric under DDP (2 gloo processes on CPU) equals one process.

Each rank processes its share of the dataset in DefaultSampler order (the
sampler pads the odd-sized dataset by repeating the first item), then the
metric collects, truncates, de-duplicates and ranks on rank 0. The two ranks
are forked processes joined by a gloo process group (tests/ddp_workers.py).
"""

import os

import pytest
import torch
import torch.distributed as dist
from ddp_workers import free_port, run_forked
from mmengine.dataset import DefaultSampler
from test_retrieval_metric import make_problem, run_metric, to_samples

from tbps_mm.evaluation import TBPSRetrievalMetric
from tbps_mm.models.checkpoint import load_checkpoint_file

WORLD_SIZE = 2
BATCH_SIZE = 4


def metric_cfg(collect_dir):
    return dict(i2t=True, keep_ranked=3, collect_dir=collect_dir)


def problem():
    # 5 ids x 3 images + 15 x 2 captions = 45 items: not divisible by 2.
    g, q = make_problem(num_ids=5, images_per_id=3, captions_per_image=2)
    return to_samples(g, q, fusion_weight=0.7)


def worker(rank: int, port: int, out_dir: str) -> None:
    # Forked after the parent used torch's thread pool: stay single-threaded
    # so that the child never touches the inherited OpenMP state.
    torch.set_num_threads(1)
    os.environ.update(
        MASTER_ADDR='127.0.0.1',
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(WORLD_SIZE),
        LOCAL_RANK=str(rank),
    )
    dist.init_process_group('gloo', rank=rank, world_size=WORLD_SIZE)
    try:
        samples = problem()
        indices = list(DefaultSampler(samples, shuffle=False))
        metric = TBPSRetrievalMetric(**metric_cfg(os.path.join(out_dir, 'collect')))
        for start in range(0, len(indices), BATCH_SIZE):
            batch = [samples[i] for i in indices[start : start + BATCH_SIZE]]
            metric.process(None, batch)
        metrics = metric.evaluate(len(samples))
        torch.save(
            dict(
                metrics=metrics,
                num_processed=len(indices),
                ranked=metric.ranked_results,
            ),
            os.path.join(out_dir, f'rank{rank}.pt'),
        )
    finally:
        dist.destroy_process_group()


def test_ddp_equals_single_process(tmp_path):
    samples = problem()
    assert len(samples) % WORLD_SIZE == 1
    single_metric = TBPSRetrievalMetric(**metric_cfg(None))
    single = run_metric(single_metric, samples, batch_size=BATCH_SIZE)

    run_forked(worker, (free_port(), str(tmp_path)), nprocs=WORLD_SIZE)
    outs = [load_checkpoint_file(str(tmp_path / f'rank{r}.pt')) for r in (0, 1)]
    # Each rank saw half of the padded dataset: the padding was really there.
    assert [o['num_processed'] for o in outs] == [23, 23]
    for out in outs:  # broadcast to every rank, bit for bit
        assert out['metrics'] == single
    assert outs[1]['ranked'] is None  # ranking runs on rank 0 only
    ranked = outs[0]['ranked']
    assert torch.equal(ranked['indices'], single_metric.ranked_results['indices'])
    assert torch.equal(ranked['ap'], single_metric.ranked_results['ap'])
    assert len(ranked['queries']) == 30 and len(ranked['gallery']) == 15


if __name__ == '__main__':
    pytest.main([__file__, '-q'])
