"""SDM and CMR across 2 gloo processes on CPU: gathered batch vs one process.

Two forked processes each hold half of a batch. With ``gather=True`` the
losses score the local samples against the whole batch, and the mean over the
processes of each process's loss and gradient (what DDP's gradient averaging
computes) must equal the single-process loss and gradient on the whole batch.
With ``gather=False`` each process's loss and gradient must equal the
single-process ones on its own half. Checked on loss level (a linear
encoder, float64, every loss option that changes the reduction, equal and
uneven halves) and on a tiny TBPSRetriever wrapped in torch's DDP.
"""

import os

import pytest
import torch
import torch.distributed as dist
from ddp_workers import free_port, run_forked
from model_fixtures import pair_batch, tiny_retriever_cfg

from tbps_mm.models.losses import CommonalityMarginRankingLoss, SDMLoss
from tbps_mm.models.losses.batch_gather import gather_batch
from tbps_mm.registry import MODELS

WORLD_SIZE = 2
NUM_PARTS, DIM, IN_DIM = 3, 4, 6
# Identities 0 and 1 have samples on both processes, so positives and
# commonality cross process boundaries.
LABELS = torch.tensor([0, 1, 2, 3, 1, 4, 0, 2])
# Samples per process: equal halves, and an uneven split.
SPLITS = {'even': (4, 4), 'uneven': (5, 3)}
LOSSES = {
    'sdm': lambda gather: SDMLoss(gather=gather),
    'sdm_learnable': lambda gather: SDMLoss(
        temperature=0.05, learnable_temperature=True, gather=gather
    ),
    'cmr_pair_all': lambda gather: CommonalityMarginRankingLoss(gather=gather),
    'cmr_sample_hardest2': lambda gather: CommonalityMarginRankingLoss(
        commonality='sample', negatives=2, sample_threshold=0.0, gather=gather
    ),
    'cmr_fixed': lambda gather: CommonalityMarginRankingLoss(
        margin_mode='fixed', gather=gather
    ),
}
MODEL_BATCH = 8  # TBPSRetriever case: 4 pairs per process


def encoder():
    """A linear encoder of image and text inputs into (K, D) parts, float64."""
    torch.manual_seed(0)
    model = torch.nn.ModuleDict(
        dict(
            image=torch.nn.Linear(IN_DIM, NUM_PARTS * DIM),
            text=torch.nn.Linear(IN_DIM, NUM_PARTS * DIM),
        )
    )
    return model.double()


def inputs():
    gen = torch.Generator().manual_seed(1)
    size = (len(LABELS), IN_DIM)
    return (
        torch.randn(size, generator=gen, dtype=torch.float64),
        torch.randn(size, generator=gen, dtype=torch.float64),
    )


def loss_and_grads(name, gather, rows):
    """Loss ``name`` of the encoder on samples ``rows``, and its gradients."""
    model, loss = encoder(), LOSSES[name](gather).double()
    x_img, x_txt = inputs()
    image = model['image'](x_img[rows]).view(-1, NUM_PARTS, DIM)
    text = model['text'](x_txt[rows]).view(-1, NUM_PARTS, DIM)
    if isinstance(loss, SDMLoss):
        image, text = image.flatten(1), text.flatten(1)
    value = loss(image, text, LABELS[rows])
    value.backward()
    params = dict(model.named_parameters(), **dict(loss.named_parameters()))
    return value.detach(), {k: p.grad.clone() for k, p in params.items()}


def rank_rows(split, rank):
    start = sum(SPLITS[split][:rank])
    return slice(start, start + SPLITS[split][rank])


def retriever_halves(rank):
    """Rank ``rank``'s half of the model batch, re-indexed from 0."""
    batch, samples = pair_batch(MODEL_BATCH)
    half = MODEL_BATCH // WORLD_SIZE
    rows = slice(rank * half, (rank + 1) * half)
    local = {k: v[rows] for k, v in batch.items()}
    local['image_index'] = local['text_index'] = torch.arange(half)
    return local, samples[rows]


def retriever(gather, state=None):
    model = MODELS.build(
        tiny_retriever_cfg(
            losses=dict(sdm=dict(gather=gather), cmr=dict(gather=gather))
        )
    )
    if state is not None:
        model.load_state_dict(state)
    # float64: the sums over processes and over the batch run in another
    # order, and float32 rounding would hide in large random-init gradients.
    return model.double().eval()  # no dropout: both runs see one function


def retriever_loss_and_grads(model, batch, samples):
    batch = dict(batch, images=batch['images'].double())
    losses = model(batch, samples, mode='loss')
    sum(losses.values()).backward()
    module = getattr(model, 'module', model)
    grads = {k: p.grad.clone() for k, p in module.named_parameters()}
    return {k: v.detach() for k, v in losses.items()}, grads


def worker(rank: int, port: int, out_dir: str, state: dict) -> None:
    # Forked after the parent used torch's thread pool: stay single-threaded.
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=WORLD_SIZE)
    try:
        out = {}
        for split in SPLITS:
            rows = rank_rows(split, rank)
            gathered = gather_batch(torch.arange(len(LABELS))[rows], LABELS[rows])
            out[split, 'gathered'] = (gathered.tensors[1], gathered.offset)
            for name in LOSSES:
                for gather in (True, False):
                    out[split, name, gather] = loss_and_grads(name, gather, rows)
        batch, samples = retriever_halves(rank)
        for gather in (True, False):
            model = torch.nn.parallel.DistributedDataParallel(retriever(gather, state))
            out['retriever', gather] = retriever_loss_and_grads(model, batch, samples)
        torch.save(out, os.path.join(out_dir, f'rank{rank}.pt'))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope='module')
def ranks(tmp_path_factory):
    """Both processes' results (rank 0's, rank 1's)."""
    out_dir = tmp_path_factory.mktemp('losses_ddp')
    state = retriever(gather=False).state_dict()
    run_forked(worker, (free_port(), str(out_dir), state), nprocs=WORLD_SIZE)
    results = [
        # The workers' own output (it holds torch's AsyncCollectiveTensor, a
        # tensor subclass), not a checkpoint: read as written.
        torch.load(out_dir / f'rank{r}.pt', weights_only=False)
        for r in range(WORLD_SIZE)
    ]
    return results, state


def mean(values):
    return sum(values) / len(values)


def assert_grads_close(actual, expected, **tol):
    assert actual.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], msg=key, **tol)


@pytest.mark.parametrize('split', list(SPLITS))
def test_gather_batch_returns_every_process_in_rank_order(ranks, split):
    results, _ = ranks
    for rank, out in enumerate(results):
        labels, offset = out[split, 'gathered']
        assert torch.equal(labels, LABELS)
        assert offset == rank_rows(split, rank).start


@pytest.mark.parametrize('split', list(SPLITS))
@pytest.mark.parametrize('name', list(LOSSES))
def test_gathered_loss_is_the_single_process_loss_on_the_whole_batch(
    ranks, name, split
):
    results, _ = ranks
    loss, grads = loss_and_grads(name, gather=False, rows=slice(None))
    per_rank = [out[split, name, True] for out in results]
    torch.testing.assert_close(mean([v for v, _ in per_rank]), loss)
    # DDP's gradient: the mean over processes.
    averaged = {k: mean([g[k] for _, g in per_rank]) for k in grads}
    assert_grads_close(averaged, grads)
    # The processes' own halves would give another loss: the check can fail.
    halves = [loss_and_grads(name, False, rank_rows(split, r))[0] for r in (0, 1)]
    assert not torch.allclose(mean(halves), loss)


@pytest.mark.parametrize('name', list(LOSSES))
def test_without_gather_each_process_computes_its_own_batch(ranks, name):
    results, _ = ranks
    for rank, out in enumerate(results):
        loss, grads = loss_and_grads(name, False, rank_rows('even', rank))
        value, rank_grads = out['even', name, False]
        torch.testing.assert_close(value, loss)
        assert_grads_close(rank_grads, grads)


def test_retriever_under_ddp_with_gather_equals_one_process_on_both_halves(ranks):
    results, state = ranks
    single = retriever(gather=False, state=state)
    losses, grads = retriever_loss_and_grads(single, *pair_batch(MODEL_BATCH))
    assert set(losses) == {'loss_sdm', 'loss_id', 'loss_cmr'}
    for key, value in losses.items():  # ID is per-sample: a mean of halves
        per_rank = [out['retriever', True][0][key] for out in results]
        torch.testing.assert_close(mean(per_rank), value, msg=key)
    for out in results:  # DDP leaves the averaged gradient on every process
        assert_grads_close(out['retriever', True][1], grads)


def test_retriever_under_ddp_without_gather_averages_per_process_batches(ranks):
    results, state = ranks
    per_half = [
        retriever_loss_and_grads(retriever(False, state), *retriever_halves(rank))
        for rank in range(WORLD_SIZE)
    ]
    for rank, out in enumerate(results):
        losses, grads = out['retriever', False]
        for key, value in per_half[rank][0].items():
            torch.testing.assert_close(losses[key], value, msg=key)
        averaged = {k: mean([g[k] for _, g in per_half]) for k in grads}
        assert_grads_close(grads, averaged)
