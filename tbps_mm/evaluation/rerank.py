"""k-reciprocal re-ranking (Zhong et al., CVPR 2017) adapted to text-to-image.

This module owns the optional re-ranking of the evaluation. The original
method re-ranks image queries against an image gallery with the Jaccard
distance between *k-reciprocal encodings*: each sample becomes a sparse
vector over the gallery whose support is its expanded k-reciprocal
neighbourhood and whose weights are ``exp(-distance)``; the final distance is
``(1 - lambda) * d_jaccard + lambda * d_original``.

Text-to-image adaptation (our design, documented in docs/evaluation.md):

- the inputs are the query-gallery similarities (Q, G) and the
  gallery-gallery similarities (G, G); no query-query similarity is used;
- similarities become distances row by row: ``d = (max - s) / (max - min)``
  over the row, so text-image and image-image scores, which live on different
  scales, both map to [0, 1] and every query row is processed independently
  of the others (chunking cannot change the result);
- gallery items: the standard construction (k1 nearest neighbours including
  the item itself, the reciprocity check, expansion by the k1/2-reciprocal
  sets of candidates that share more than 2/3 of their set, ``exp(-d)``
  weights normalised to sum 1, local query expansion over the k2 nearest
  neighbours);
- queries: a text query has no place in an image's neighbour list (cross-modal
  scores are not comparable with image-image ones), so its neighbourhood is
  its top-k1 gallery items without the reciprocity check; it is expanded with
  the gallery's k1/2-reciprocal sets by the same 2/3 rule, weighted by
  ``exp(-d)`` and locally expanded with its k2 - 1 nearest gallery items'
  encodings;
- the result is returned as a similarity, ``-final_distance``, so that
  :func:`tbps_mm.evaluation.functional.rank_metrics` ranks it directly.

Every step is vectorised in torch: neighbour sets are padded index matrices,
the encodings are sparse tensors and the Jaccard overlaps are accumulated
through the inverted (column) index of the gallery encodings, in bounded
blocks. The gallery side costs O(G * k1^2) memory plus the sparse encodings;
queries run in chunks. Written by hand: no library of the stack offers
re-ranking.

Example:
    >>> import torch
    >>> from tbps_mm.evaluation.rerank import k_reciprocal_rerank
    >>> g = torch.nn.functional.normalize(torch.randn(30, 8), dim=1)
    >>> q = torch.nn.functional.normalize(torch.randn(4, 8), dim=1)
    >>> k_reciprocal_rerank(q @ g.T, g @ g.T, k1=5, k2=2).shape
    torch.Size([4, 30])
"""

import warnings
from typing import Callable, Optional, Tuple, Union

import torch

RowProvider = Callable[[int, int], torch.Tensor]

#: Entries processed at once when accumulating Jaccard overlaps.
_BLOCK_ENTRIES = 4 * 1024**2


def _row_distances(sim: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each row into a distance in [0, 1]."""
    sim = sim.double()
    row_max = sim.max(dim=1, keepdim=True).values
    row_min = sim.min(dim=1, keepdim=True).values
    span = (row_max - row_min).clamp_min(torch.finfo(torch.float64).tiny)
    return (row_max - sim) / span


def _reciprocal_mask(neighbours: torch.Tensor) -> torch.Tensor:
    """``mask[i, a]``: is ``i`` among the neighbours of ``neighbours[i, a]``?"""
    rows = torch.arange(neighbours.shape[0])[:, None, None]
    return (neighbours[neighbours] == rows).any(dim=2)


def _dedupe(indices: torch.Tensor, valid: torch.Tensor) -> Tuple[torch.Tensor, ...]:
    """Sort each row's indices and invalidate repeats and padding."""
    big = torch.iinfo(indices.dtype).max
    keys = torch.where(valid, indices, torch.full_like(indices, big))
    keys = keys.sort(dim=1).values
    repeated = torch.zeros_like(valid)
    repeated[:, 1:] = keys[:, 1:] == keys[:, :-1]
    valid = (keys != big) & ~repeated
    return keys.clamp(max=int(indices.max()) if indices.numel() else 0), valid


def _sparse_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Sparse @ sparse, without torch's notice that CSR support is beta.

    torch converts COO operands to CSR internally for this product and warns
    each time; the product itself is exact and tested here.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='Sparse CSR tensor support')
        return torch.sparse.mm(a, b)


class KReciprocalReranker:
    """Gallery-side k-reciprocal encodings, reusable for any number of queries.

    Args:
        gallery_sim (Tensor | Callable[[int, int], Tensor]): The (G, G)
            gallery-gallery similarities, or a function returning rows
            ``start:stop`` of it (so that the full matrix never has to exist).
        num_gallery (int, optional): G; required when ``gallery_sim`` is a
            function.
        k1 (int): Neighbourhood size. Defaults to 20.
        k2 (int): Local query expansion size. Defaults to 6.
        lambda_value (float): Weight of the original distance in the final
            one. Defaults to 0.3.
        chunk_size (int): Rows processed at once. Defaults to 256.

    Example:
        >>> g = torch.nn.functional.normalize(torch.randn(30, 8), dim=1)
        >>> reranker = KReciprocalReranker(g @ g.T, k1=5, k2=2)
        >>> reranker(torch.randn(3, 30)).shape
        torch.Size([3, 30])
    """

    def __init__(
        self,
        gallery_sim: Union[torch.Tensor, RowProvider],
        num_gallery: Optional[int] = None,
        k1: int = 20,
        k2: int = 6,
        lambda_value: float = 0.3,
        chunk_size: int = 256,
    ) -> None:
        if isinstance(gallery_sim, torch.Tensor):
            if gallery_sim.dim() != 2 or gallery_sim.shape[0] != gallery_sim.shape[1]:
                raise ValueError(
                    'gallery_sim must be a square (G, G) matrix, got shape '
                    f'{tuple(gallery_sim.shape)}'
                )
            num_gallery = gallery_sim.shape[0]
            matrix = gallery_sim.detach().cpu()
            rows: RowProvider = lambda start, stop: matrix[start:stop]
        elif callable(gallery_sim):
            if num_gallery is None:
                raise ValueError('num_gallery is required with a row function')
            rows = gallery_sim
        else:
            raise TypeError(
                'gallery_sim must be a tensor or a function of (start, stop), '
                f'got {type(gallery_sim).__name__}'
            )
        if num_gallery < 2:
            raise ValueError(f're-ranking needs >= 2 gallery items, got {num_gallery}')
        if k1 < 1 or k2 < 1:
            raise ValueError(f'k1 and k2 must be >= 1, got k1={k1}, k2={k2}')
        if not 0.0 <= lambda_value <= 1.0:
            raise ValueError(f'lambda_value must be in [0, 1], got {lambda_value}')
        self.num_gallery = num_gallery
        self.k1 = min(k1, num_gallery - 1)
        self.k1_half = min(int(round(k1 / 2)), num_gallery - 1)
        self.k2 = min(k2, num_gallery)
        self.lambda_value = lambda_value
        self.chunk_size = max(1, int(chunk_size))
        self._build(rows)

    def _chunks(self, total: int):
        for start in range(0, total, self.chunk_size):
            yield start, min(start + self.chunk_size, total)

    def _build(self, rows: RowProvider) -> None:
        """Gallery neighbour sets, reciprocity and sparse encodings."""
        num = self.num_gallery
        # Pass 1: neighbour lists (the item itself is normally first).
        neighbours, neighbours_half = [], []
        for start, stop in self._chunks(num):
            sim = rows(start, stop).detach().cpu().double()
            neighbours.append(sim.topk(self.k1 + 1, dim=1).indices)
            neighbours_half.append(sim.topk(self.k1_half + 1, dim=1).indices)
        nn = torch.cat(neighbours)
        nn_half = torch.cat(neighbours_half)
        reciprocal = _reciprocal_mask(nn)
        half_reciprocal = _reciprocal_mask(nn_half)
        self.nn = nn
        self.nn_half = nn_half
        self.half_reciprocal = half_reciprocal
        self.half_sizes = half_reciprocal.sum(dim=1)

        # Expanded k-reciprocal sets and pass 2: their exp(-d) weights.
        rows_idx, cols_idx, weights = [], [], []
        for start, stop in self._chunks(num):
            support, valid = self._expand(nn[start:stop], reciprocal[start:stop])
            dist = _row_distances(rows(start, stop).detach().cpu())
            w = torch.exp(-dist.gather(1, support)) * valid
            w = w / w.sum(dim=1, keepdim=True)
            r = torch.arange(start, stop)[:, None].expand_as(support)
            rows_idx.append(r[valid])
            cols_idx.append(support[valid])
            weights.append(w[valid])
        encodings = torch.sparse_coo_tensor(
            torch.stack([torch.cat(rows_idx), torch.cat(cols_idx)]),
            torch.cat(weights),
            (num, num),
            check_invariants=False,
        ).coalesce()
        self.encodings = encodings
        # Local query expansion: mean over the k2 nearest neighbours' rows.
        expanded = _sparse_mm(self._averaging(nn[:, : self.k2], num), encodings)
        # Inverted index: for each gallery column x, the items whose encoding
        # is non-zero at x (CSR of the transpose).
        inverted = expanded.t().coalesce()  # indices sorted by column x
        columns, items = inverted.indices()
        per_column = torch.bincount(columns, minlength=num)
        self._inv_crow = torch.cat([per_column.new_zeros(1), per_column.cumsum(0)])
        self._inv_items = items
        self._inv_values = inverted.values()

    def _averaging(self, neighbours: torch.Tensor, num_cols: int) -> torch.Tensor:
        """Sparse (N, num_cols) matrix averaging the listed rows."""
        n, k = neighbours.shape
        rows = torch.arange(n)[:, None].expand(n, k).reshape(-1)
        return torch.sparse_coo_tensor(
            torch.stack([rows, neighbours.reshape(-1)]),
            torch.full((n * k,), 1.0 / self.k2, dtype=torch.float64),
            (n, num_cols),
            check_invariants=False,
        ).coalesce()

    def _expand(
        self, candidates: torch.Tensor, is_member: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Expand each set with the half-size sets of its members (2/3 rule).

        Args:
            candidates (Tensor): (C, A) gallery indices of each set.
            is_member (Tensor): (C, A) which candidates belong to the set.

        Returns:
            tuple[Tensor, Tensor]: (C, S) sorted gallery indices and their
            validity (duplicates and padding invalid).
        """
        halves = self.nn_half[candidates]  # (C, A, B)
        half_valid = self.half_reciprocal[candidates]  # (C, A, B)
        # Is each member of a candidate's half set in the original set?
        in_set = (halves[..., None] == candidates[:, None, None, :]) & is_member[
            :, None, None, :
        ]
        overlap = (in_set.any(dim=3) & half_valid).sum(dim=2)  # (C, A)
        accept = is_member & (overlap * 3 > 2 * self.half_sizes[candidates])
        added_valid = half_valid & accept[..., None]
        support = torch.cat([candidates, halves.flatten(1)], dim=1)
        valid = torch.cat([is_member, added_valid.flatten(1)], dim=1)
        return _dedupe(support, valid)

    def __call__(self, query_sim: torch.Tensor) -> torch.Tensor:
        """Re-rank queries against the gallery.

        Args:
            query_sim (Tensor): (Q, G) query-gallery similarities.

        Returns:
            Tensor: (Q, G) float64 re-ranked similarities (``-distance``).
        """
        if query_sim.dim() != 2 or query_sim.shape[1] != self.num_gallery:
            raise ValueError(
                f'query_sim must be (num_queries, {self.num_gallery}), got shape '
                f'{tuple(query_sim.shape)}'
            )
        query_sim = query_sim.detach().cpu()
        out = [
            self._rerank_chunk(query_sim[start:stop])
            for start, stop in self._chunks(query_sim.shape[0])
        ]
        return torch.cat(out) if out else query_sim.new_zeros((0, self.num_gallery))

    def _rerank_chunk(self, sim: torch.Tensor) -> torch.Tensor:
        num_q, num = sim.shape[0], self.num_gallery
        dist = _row_distances(sim)
        top = sim.double().topk(self.k1, dim=1).indices  # (C, k1)
        support, valid = self._expand(top, torch.ones_like(top, dtype=torch.bool))
        w = torch.exp(-dist.gather(1, support)) * valid
        w = w / w.sum(dim=1, keepdim=True)
        rows = torch.arange(num_q)[:, None].expand_as(support)
        own = torch.sparse_coo_tensor(
            torch.stack([rows[valid], support[valid]]),
            w[valid] / self.k2,
            (num_q, num),
            check_invariants=False,
        )
        # Local query expansion with the k2 - 1 nearest gallery encodings.
        if self.k2 > 1:
            nearest = self._averaging(top[:, : self.k2 - 1], num)
            own = own + _sparse_mm(nearest, self.encodings)
        own = own.coalesce()
        q_idx, cols = own.indices()
        q_val = own.values()
        overlap = self._min_overlap(q_idx, cols, q_val, num_q)
        jaccard = 1.0 - overlap / (2.0 - overlap)
        final = (1.0 - self.lambda_value) * jaccard + self.lambda_value * dist
        return -final

    def _min_overlap(
        self, q_idx: torch.Tensor, cols: torch.Tensor, q_val: torch.Tensor, num_q: int
    ) -> torch.Tensor:
        """``sum_x min(V_q[x], V_g[x])`` for every (query, gallery) pair."""
        num = self.num_gallery
        lengths = self._inv_crow[cols + 1] - self._inv_crow[cols]
        ends = lengths.cumsum(0)
        out = torch.zeros(num_q * num, dtype=torch.float64)
        start_pair = 0
        while start_pair < cols.numel():
            # Take pairs until their inverted-list entries fill one block.
            done = int(ends[start_pair - 1]) if start_pair else 0
            stop_pair = int(torch.searchsorted(ends, done + _BLOCK_ENTRIES, right=True))
            stop_pair = max(stop_pair, start_pair + 1)
            lens = lengths[start_pair:stop_pair]
            pair = torch.repeat_interleave(torch.arange(start_pair, stop_pair), lens)
            first = (lens.cumsum(0) - lens).repeat_interleave(lens)
            entry = self._inv_crow[cols[pair]] + (torch.arange(pair.numel()) - first)
            items = self._inv_items[entry]
            contrib = torch.minimum(q_val[pair], self._inv_values[entry])
            out.index_add_(0, q_idx[pair] * num + items, contrib)
            start_pair = stop_pair
        return out.view(num_q, num)


def k_reciprocal_rerank(
    query_sim: torch.Tensor,
    gallery_sim: torch.Tensor,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    chunk_size: int = 256,
) -> torch.Tensor:
    """Re-rank text-to-image similarities with k-reciprocal encodings.

    See the module docstring for the text-to-image adaptation.

    Args:
        query_sim (Tensor): (Q, G) query-gallery similarities.
        gallery_sim (Tensor): (G, G) gallery-gallery similarities.
        k1 (int): Neighbourhood size. Defaults to 20.
        k2 (int): Local query expansion size. Defaults to 6.
        lambda_value (float): Weight of the original distance. Defaults to 0.3.
        chunk_size (int): Rows processed at once. Defaults to 256.

    Returns:
        Tensor: (Q, G) float64 re-ranked similarities (larger = better).

    Example:
        >>> g = torch.nn.functional.normalize(torch.randn(12, 4), dim=1)
        >>> k_reciprocal_rerank(g[:3] @ g.T, g @ g.T, k1=4, k2=2).shape
        torch.Size([3, 12])
    """
    reranker = KReciprocalReranker(
        gallery_sim, k1=k1, k2=k2, lambda_value=lambda_value, chunk_size=chunk_size
    )
    return reranker(torch.as_tensor(query_sim))
