"""Block geometry of the Dask ops: which output positions each block computes and what it reads.

Pure functions on sizes, no Dask: one spatial dim at a time, then channels.

Spatial dims, forward (a window op ``y[j]`` reads ``x[j*s - lo : j*s - lo + dk]``):
output ``j`` belongs to the input chunk that holds its *anchor* ``x[j*s]``, so
the output's block boundaries are the input's divided by the stride, rounded
up (aligned to the stride: every output position is computed by exactly one
block). A block of outputs ``[j0, j1)`` reads ``x[j0*s - lo : (j1-1)*s - lo +
dk]``: its own chunk plus a halo of ``lo`` before and ``dk - s - lo`` after
(``(k-1)*dilation`` in all at stride 1, split as the pads split), from as
many neighbouring chunks as that takes, and zero pads where it leaves the
array. A block that would read nothing of ``x`` is merged into its neighbour.

Spatial dims, adjoint (transposed convolution, input gradient): a block of
the forward's input positions ``[i0, i1)`` receives from the forward outputs
whose windows touch it.

Channels: chunks along the input channels are reduced (partial sums) and the
output channels are split so that, with groups, every (output chunk, input
piece) pair is one ordinary grouped convolution (:func:`channel_pairs`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

__all__ = ["edges", "Window", "forward_blocks", "adjoint_blocks", "anchored_edges", "split_at_groups",
           "Pair", "channel_pairs"]


def edges(chunks) -> list:
    """Chunk sizes as boundaries: ``(3, 2)`` -> ``[0, 3, 5]``.

    Examples
    --------
    >>> edges((3, 2))
    [0, 3, 5]
    """
    return list(itertools.accumulate(chunks, initial=0))


@dataclass(frozen=True)
class Window:
    """One block along one dim: outputs ``[j0, j1)`` computed from input ``[a, b)`` padded by ``pads``.

    ``[a, b)`` lies inside the input; ``pads`` are the zero pads the block's
    own op adds (the global array's pads, where the block touches its edges).
    """

    j0: int
    j1: int
    a: int
    b: int
    pads: tuple


def forward_blocks(n, lo, hi, s, dk, m, in_edges) -> list:
    """Blocks of a window op along one dim (see the module docstring).

    ``n`` input size, ``(lo, hi)`` pads, ``s`` stride, ``dk`` dilated kernel
    extent, ``m`` output size (from the spec: with ``ceil_mode`` it may hold a
    last window past ``hi``), ``in_edges`` the input's chunk boundaries. The
    last block keeps the global ``hi`` pad and reads to the end of the input,
    so the op on it counts its outputs (``ceil_mode`` included) as the global
    op does.

    Examples
    --------
    8 inputs in chunks of 4, kernel 3, padding 1 ("same"): outputs 0-3 read
    ``x[-1:5]`` (one zero pad, one halo element after), 4-7 read ``x[3:9]``.

    >>> [(w.j0, w.j1, w.a, w.b, w.pads) for w in forward_blocks(8, 1, 1, 1, 3, 8, [0, 4, 8])]
    [(0, 4, 0, 5, (1, 0)), (4, 8, 3, 8, (0, 1))]

    Stride 3 does not divide the chunks: boundaries round up to the stride.

    >>> [(w.j0, w.j1) for w in forward_blocks(10, 0, 0, 3, 2, 3, [0, 4, 7, 10])]
    [(0, 2), (2, 3)]
    """
    cuts = sorted({-(-e // s) for e in in_edges[1:-1]} - {0} | {0, m})
    cuts = [c for c in cuts if 0 <= c <= m]

    def reads(j0, j1):  # the input range the block's windows need (may leave [0, n))
        return j0 * s - lo, (j1 - 1) * s - lo + dk

    # A block that reads nothing of x (all pad) joins its neighbour.
    changed = True
    while changed and len(cuts) > 2:
        changed = False
        for i in range(len(cuts) - 1):
            a, b = reads(cuts[i], cuts[i + 1])
            if b <= 0 or a >= n:
                del cuts[i + 1 if i == 0 else i]
                changed = True
                break
    blocks = []
    for i, (j0, j1) in enumerate(zip(cuts, cuts[1:])):
        a, b = reads(j0, j1)
        last = i == len(cuts) - 2
        if last:  # the global op's count (ceil_mode, trailing unread input) holds on the last block
            b_in, right = n, hi
        else:
            b_in, right = min(b, n), max(0, b - n)
        blocks.append(Window(j0, j1, max(a, 0), b_in, (max(0, -a), right)))
    return blocks


def adjoint_blocks(n, lo, s, dk, m, out_edges) -> list:
    """Blocks of the adjoint of a window op along one dim: forward inputs ``[a, b)`` per block.

    Here ``Window.a, Window.b`` are the block's own forward-input positions
    (the adjoint's outputs, from ``out_edges``), ``j0, j1`` the forward
    outputs whose windows touch them (``j0 == j1``: none, the block is zero),
    and ``pads`` the zero pads of the local forward problem on ``[j0*s - lo,
    (j1-1)*s - lo + dk)`` clipped to the input: the local adjoint then yields
    positions ``[max(j0*s - lo, 0), min((j1-1)*s - lo + dk, n))``.

    Examples
    --------
    >>> [(w.a, w.b, w.j0, w.j1, w.pads) for w in adjoint_blocks(8, 1, 1, 3, 8, [0, 4, 8])]
    [(0, 4, 0, 5, (1, 0)), (4, 8, 3, 8, (0, 1))]
    """
    blocks = []
    for a, b in zip(out_edges, out_edges[1:]):
        j0 = max(0, -(-(a + lo - dk + 1) // s))
        j1 = min(m, (b - 1 + lo) // s + 1)
        if j1 <= j0:
            blocks.append(Window(j0, j0, a, b, (0, 0)))
            continue
        ra, rb = j0 * s - lo, (j1 - 1) * s - lo + dk
        blocks.append(Window(j0, j1, a, b, (max(0, -ra), max(0, rb - n))))
    return blocks


def anchored_edges(in_edges, s, lo, n_out) -> list:
    """Output boundaries of a transposed convolution: input ``i`` owns outputs ``[i*s - lo, (i+1)*s - lo)``.

    Examples
    --------
    >>> anchored_edges([0, 3, 6], 2, 1, 11)
    [0, 5, 11]
    """
    inner = sorted({e * s - lo for e in in_edges[1:-1]} & set(range(1, n_out)))
    return [0, *inner, n_out]


def split_at_groups(bounds, per) -> list:
    """Boundaries refined so that every piece is whole groups of ``per`` channels or lies in one group.

    Examples
    --------
    >>> split_at_groups([0, 6, 8], 4)   # [0, 6) straddles the group boundary 4
    [0, 4, 6, 8]
    >>> split_at_groups([0, 3, 12], 4)
    [0, 3, 4, 12]
    """
    out = {bounds[0], bounds[-1]}
    for c0, c1 in zip(bounds, bounds[1:]):
        out |= {c0, c1}
        first, last = -(-c0 // per) * per, c1 // per * per
        if first <= last:  # holds a whole group or crosses a group boundary
            out |= {first, last}
    return sorted(out)


@dataclass(frozen=True)
class Pair:
    """One input piece's contribution to one output chunk: a grouped convolution of ``groups``.

    Input channels ``[i0, i1)`` (inside input piece ``piece``), output
    channels ``[o0, o1)``; the weight's per-group axis is sliced to
    ``[col0, col0 + cols)`` (conv: its in-channels; transposed: its out-channels).
    """

    piece: int
    i0: int
    i1: int
    o0: int
    o1: int
    groups: int
    col0: int
    cols: int


def channel_pairs(in_bounds, c_in, c_out, groups, out_bounds=None, transpose=False):
    """``(in_pieces, out_chunks, pairs)``: the channel plan of a (transposed) convolution.

    ``in_bounds`` are the input's channel chunk boundaries, ``out_bounds``
    optional wanted output boundaries (a split weight). ``pairs[k]`` lists the
    :class:`Pair` of output chunk ``k``; its partial results are summed.

    Examples
    --------
    Depthwise (groups = 4) with input chunks of 2 channels: two independent
    chunks of two groups each.

    >>> pieces, outs, pairs = channel_pairs([0, 2, 4], 4, 4, 4)
    >>> outs, [(p.i0, p.i1, p.o0, p.o1, p.groups) for k in pairs for p in k]
    ([0, 2, 4], [(0, 2, 0, 2, 2), (2, 4, 2, 4, 2)])

    groups = 1 with input chunks: one output chunk, a sum over two pieces.

    >>> [(p.i0, p.i1, p.col0, p.cols) for p in channel_pairs([0, 3, 5], 5, 8, 1)[2][0]]
    [(0, 3, 0, 3), (3, 5, 3, 2)]
    """
    ipg, opg = c_in // groups, c_out // groups
    pieces = split_at_groups(list(in_bounds), ipg)
    natural = {0, c_out}
    for c0, c1 in zip(pieces, pieces[1:]):
        g0, g1 = c0 // ipg, -(-c1 // ipg)
        natural |= {g0 * opg, g1 * opg}
    outs = split_at_groups(sorted(natural | set(out_bounds or ())), opg)
    pairs = []
    for o0, o1 in zip(outs, outs[1:]):
        g0, g1 = o0 // opg, -(-o1 // opg)
        whole = o0 % opg == 0 and o1 % opg == 0
        sub = g1 - g0 if whole else 1
        lo_c, hi_c = g0 * ipg, g1 * ipg
        chunk = []
        for k, (c0, c1) in enumerate(zip(pieces, pieces[1:])):
            i0, i1 = max(c0, lo_c), min(c1, hi_c)
            if i0 >= i1:
                continue
            if transpose:  # weight (C_in, C_out/groups, *k): slice its out-channels
                col0, cols = o0 - g0 * opg if sub == 1 else 0, (o1 - o0) // sub
            else:  # weight (C_out, C_in/groups, *k): slice its in-channels
                col0, cols = i0 - g0 * ipg if sub == 1 else 0, (i1 - i0) // sub
            chunk.append(Pair(k, i0, i1, o0, o1, sub, col0, cols))
        pairs.append(chunk)
    return pieces, outs, pairs
