"""An in-memory point-in-cell index for batch assignment.

The cells' extent is cut into a grid of tiles. A tile that no cell boundary crosses lies wholly inside one cell
(or wholly outside all cells), so a point there is answered by one array lookup. Only points in tiles that a
boundary crosses are tested against the few cells that touch their tile, with prepared GEOS geometries.
Ties on shared edges go to the cell with the lowest code, every time (cells are kept in code order).
"""

from __future__ import annotations

import numpy as np
import shapely
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage

EMPTY = -1
MIXED = -2
# An offset of the tile grid that no coordinate on a decimal grid shares, so tile edges never coincide with
# cell edges (a point on a tile edge then always belongs to a tile whose cell is unambiguous).
_OFFSET = 0.5377461


class CellIndex:
    """Assigns points (in the cells' own coordinates) to cells; `assign` returns positions, -1 for none."""

    def __init__(self, geoms: ArrayLike, tiles_per_cell: int = 48, max_tiles: int = 8_000_000) -> None:
        self.geoms = np.asarray(geoms, dtype=object)
        n = len(self.geoms)
        shapely.prepare(self.geoms)
        if n == 0:
            self.shape = (0, 0)
            return
        minx, miny, maxx, maxy = shapely.total_bounds(self.geoms)
        ntiles = int(min(max(tiles_per_cell * n, 65_536), max_tiles))
        width, height = max(maxx - minx, 1e-9), max(maxy - miny, 1e-9)
        size = float(np.sqrt(width * height / ntiles))
        self.dx = self.dy = size
        self.x0 = minx - size * _OFFSET
        self.y0 = miny - size * _OFFSET
        nx = int(np.ceil((maxx - self.x0) / size)) + 1
        ny = int(np.ceil((maxy - self.y0) / size)) + 1
        self.shape = (ny, nx)
        mixed = self._boundary_tiles()
        self.owner = self._owners(mixed)
        self._candidates(mixed)

    # -- build ------------------------------------------------------------------------------------------
    def _boundary_tiles(self) -> NDArray[np.bool_]:
        """Tiles crossed by any ring segment (an exact supercover: each segment is cut at the grid lines)."""
        ny, nx = self.shape
        rings = shapely.get_rings(shapely.get_parts(self.geoms))
        coords, ring_idx = shapely.get_coordinates(rings, return_index=True)
        same = ring_idx[1:] == ring_idx[:-1]
        a, b = coords[:-1][same], coords[1:][same]
        ax, ay = (a[:, 0] - self.x0) / self.dx, (a[:, 1] - self.y0) / self.dy
        bx, by = (b[:, 0] - self.x0) / self.dx, (b[:, 1] - self.y0) / self.dy
        # Parameters t in (0, 1) where the segment crosses a vertical or horizontal grid line.
        ts = [np.zeros(len(a)), np.ones(len(a))]
        seg = [np.arange(len(a)), np.arange(len(a))]
        for p, q in ((ax, bx), (ay, by)):
            lo, hi = np.minimum(p, q), np.maximum(p, q)
            first = np.floor(lo) + 1
            count = np.maximum(np.ceil(hi) - first, 0).astype(np.int64)
            sid = np.repeat(np.arange(len(a)), count)
            step = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
            line = first[sid] + step
            denom = (q - p)[sid]
            ts.append((line - p[sid]) / denom)
            seg.append(sid)
        t = np.concatenate(ts)
        s = np.concatenate(seg)
        order = np.lexsort((t, s))
        t, s = t[order], s[order]
        keep = s[1:] == s[:-1]
        tm = ((t[1:] + t[:-1]) / 2)[keep]
        sm = s[1:][keep]
        mx = ax[sm] + (bx[sm] - ax[sm]) * tm
        my = ay[sm] + (by[sm] - ay[sm]) * tm
        ix = np.clip(np.floor(mx).astype(np.int64), 0, nx - 1)
        iy = np.clip(np.floor(my).astype(np.int64), 0, ny - 1)
        mixed = np.zeros(self.shape, dtype=bool)
        mixed[iy, ix] = True
        # Vertices themselves (a ring may turn inside a tile without the midpoints showing it).
        vx = np.clip(np.floor(np.concatenate([ax, bx])).astype(np.int64), 0, nx - 1)
        vy = np.clip(np.floor(np.concatenate([ay, by])).astype(np.int64), 0, ny - 1)
        mixed[vy, vx] = True
        return mixed

    def _owners(self, mixed: NDArray[np.bool_]) -> NDArray[np.int32]:
        """Connected runs of uncrossed tiles lie in one cell: test one tile centre per run."""
        labels, count = ndimage.label(~mixed)
        owner = np.full(self.shape, EMPTY, dtype=np.int32)
        owner[mixed] = MIXED
        if count:
            flat = labels.ravel()
            _, first = np.unique(flat, return_index=True)
            first = first[flat[first] > 0]
            iy, ix = np.unravel_index(first, self.shape)
            cx = self.x0 + (ix + 0.5) * self.dx
            cy = self.y0 + (iy + 0.5) * self.dy
            hit = self._assign_by_test(cx, cy, np.arange(len(self.geoms)))
            lut = np.full(count + 1, EMPTY, dtype=np.int32)
            lut[flat[first]] = hit
            owner[~mixed] = lut[labels[~mixed]]
        return owner

    def _candidates(self, mixed: NDArray[np.bool_]) -> None:
        """For each crossed tile, the cells (in code order) whose geometry touches it, as CSR arrays."""
        tiles = np.flatnonzero(mixed.ravel())
        iy, ix = np.unravel_index(tiles, self.shape)
        boxes = shapely.box(
            self.x0 + ix * self.dx, self.y0 + iy * self.dy, self.x0 + (ix + 1) * self.dx, self.y0 + (iy + 1) * self.dy
        )
        tree = shapely.STRtree(self.geoms)
        box_i, cell_i = tree.query(boxes, predicate="intersects")
        order = np.lexsort((cell_i, box_i))
        box_i, cell_i = box_i[order], cell_i[order]
        self.slot = np.full(self.shape[0] * self.shape[1], -1, dtype=np.int64)
        self.slot[tiles] = np.arange(len(tiles))
        self.cand_ptr = np.zeros(len(tiles) + 1, dtype=np.int64)
        np.add.at(self.cand_ptr, box_i + 1, 1)
        self.cand_ptr = np.cumsum(self.cand_ptr)
        self.cand = cell_i.astype(np.int32)

    def _assign_by_test(self, x: NDArray, y: NDArray, cells: NDArray) -> NDArray[np.int32]:
        """Slow path used at build time: the lowest-positioned cell covering each point."""
        tree = shapely.STRtree(self.geoms[cells])
        pts = shapely.points(x, y)
        p, c = tree.query(pts, predicate="intersects")
        out = np.full(len(x), EMPTY, dtype=np.int32)
        if len(p):
            best = np.full(len(x), np.iinfo(np.int32).max, dtype=np.int64)
            np.minimum.at(best, p, cells[c])
            found = best < np.iinfo(np.int32).max
            out[found] = best[found]
        return out

    # -- query ------------------------------------------------------------------------------------------
    def assign(self, x: ArrayLike, y: ArrayLike) -> NDArray[np.int32]:
        """Position of the cell covering each point (lowest on shared edges), or -1."""
        xa = np.asarray(x, dtype=float)
        ya = np.asarray(y, dtype=float)
        out = np.full(xa.shape, EMPTY, dtype=np.int32)
        if len(self.geoms) == 0 or xa.size == 0:
            return out
        ny, nx = self.shape
        fx = np.floor((xa - self.x0) / self.dx)
        fy = np.floor((ya - self.y0) / self.dy)
        inside = (fx >= 0) & (fx < nx) & (fy >= 0) & (fy < ny)
        idx = np.flatnonzero(inside)
        tile = fy[idx].astype(np.int64) * nx + fx[idx].astype(np.int64)
        own = self.owner.ravel()[tile]
        out[idx] = np.where(own >= 0, own, EMPTY)
        hard = own == MIXED
        if hard.any():
            pts = idx[hard]
            slot = self.slot[tile[hard]]
            start, stop = self.cand_ptr[slot], self.cand_ptr[slot + 1]
            count = stop - start
            pid = np.repeat(np.arange(len(pts)), count)
            offs = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
            cells = self.cand[start[pid] + offs]
            ok = shapely.intersects_xy(self.geoms[cells], xa[pts[pid]], ya[pts[pid]])
            # Pairs are ordered by point then by cell: the first hit per point is the lowest cell.
            hit_p, first = np.unique(pid[ok], return_index=True)
            out[pts[hit_p]] = cells[ok][first]
        return out
