"""A simple pure-PyTorch rasteriser: the reference the C++ backend is checked and benchmarked against.

Vectorised, no Python loops over triangles or pixels: every triangle's pixel-centre bounding box is
expanded into (triangle, pixel) candidates, barycentrics come from the same closed form as the C++
kernel (differentiable by autograd), and a z-buffer is resolved with scatter_reduce(amin).
"""
from __future__ import annotations

import torch


def _lambdas(p: torch.Tensor, X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """p [N, 3, 3] (x, y, w of 3 vertices), pixel ndc X, Y [N] -> lambda [N, 3]."""
    q = torch.stack([X, Y, torch.ones_like(X)], -1)
    l0 = (torch.linalg.cross(p[:, 1], p[:, 2], dim=-1) * q).sum(-1)
    l1 = (torch.linalg.cross(p[:, 2], p[:, 0], dim=-1) * q).sum(-1)
    l2 = (torch.linalg.cross(p[:, 0], p[:, 1], dim=-1) * q).sum(-1)
    return torch.stack([l0, l1, l2], -1)


def rasterize(pos: torch.Tensor, tri: torch.Tensor, resolution: tuple[int, int]) -> torch.Tensor:
    """pos [B, V, 4], tri [F, 3] -> rast [B, H, W, 4] = (u, v, z/w, triangle_id + 1)."""
    H, W = resolution
    B = pos.shape[0]
    tri = tri.long()
    F = tri.shape[0]
    outs = []
    for b in range(B):  # images are independent; batches are small
        P = pos[b][tri]  # [F, 3, 4]
        w = P[..., 3]
        ok = (w > 0).all(-1)
        wd = torch.where(w > 0, w, torch.ones_like(w)).detach()
        sx = (P[..., 0].detach() / wd * 0.5 + 0.5) * W - 0.5
        sy = (P[..., 1].detach() / wd * 0.5 + 0.5) * H - 0.5
        x0 = sx.min(-1).values.ceil().clamp(min=0).long()
        x1 = sx.max(-1).values.floor().clamp(max=W - 1).long()
        y0 = sy.min(-1).values.ceil().clamp(min=0).long()
        y1 = sy.max(-1).values.floor().clamp(max=H - 1).long()
        nx, ny = (x1 - x0 + 1).clamp(min=0), (y1 - y0 + 1).clamp(min=0)
        count = torch.where(ok, nx * ny, torch.zeros_like(nx))
        fid = torch.repeat_interleave(torch.arange(F, device=pos.device), count)
        start = torch.cumsum(count, 0) - count
        local = torch.arange(int(count.sum()), device=pos.device) - start[fid]
        px = x0[fid] + local % nx[fid]
        py = y0[fid] + local // nx[fid]
        X = (px.to(pos.dtype) + 0.5) / W * 2 - 1
        Y = (py.to(pos.dtype) + 0.5) / H * 2 - 1
        Pc = P[fid]
        lam = _lambdas(Pc[..., [0, 1, 3]], X, Y)
        total = lam.sum(-1, keepdim=True)
        degenerate = total.detach() == 0
        bary = lam / torch.where(degenerate, torch.ones_like(total), total)  # no NaN to leak into gradients
        inside = (bary.detach() >= 0).all(-1) & ~degenerate[:, 0]
        fid, px, py, bary, Pc = fid[inside], px[inside], py[inside], bary[inside], Pc[inside]
        zw = (bary * Pc[..., 2]).sum(-1) / (bary * Pc[..., 3]).sum(-1)
        clip = (zw.detach() >= -1) & (zw.detach() <= 1)
        fid, px, py, bary, zw = fid[clip], px[clip], py[clip], bary[clip], zw[clip]
        pix = py * W + px
        # z-buffer: nearest depth, ties to the lowest triangle id (as the C++ kernel)
        best = torch.full((H * W,), float("inf"), dtype=zw.dtype, device=pos.device)
        best = best.scatter_reduce(0, pix, zw.detach(), reduce="amin")
        winner = zw.detach() == best[pix]
        first = torch.full((H * W,), F, dtype=torch.long, device=pos.device).scatter_reduce(0, pix[winner], fid[winner], reduce="amin")
        keep = winner & (fid == first[pix])
        rast = torch.zeros(H * W, 4, dtype=pos.dtype, device=pos.device)
        vals = torch.stack([bary[keep, 0], bary[keep, 1], zw[keep], (fid[keep] + 1).to(pos.dtype)], -1)
        rast = rast.index_put((pix[keep],), vals)
        outs.append(rast.view(H, W, 4))
    return torch.stack(outs)


def interpolate(attr: torch.Tensor, rast: torch.Tensor, tri: torch.Tensor) -> torch.Tensor:
    """attr [B or 1, V, C] -> [B, H, W, C]."""
    B, H, W, _ = rast.shape
    tid = rast[..., 3].long()
    covered = (tid > 0).unsqueeze(-1)
    t = tri.long()[(tid - 1).clamp(min=0)]  # [B, H, W, 3]
    a = attr.expand(B, -1, -1)
    bidx = torch.arange(B, device=rast.device).view(B, 1, 1, 1)
    corners = a[bidx, t]  # [B, H, W, 3, C]
    u, v = rast[..., 0:1], rast[..., 1:2]
    out = u * corners[..., 0, :] + v * corners[..., 1, :] + (1 - u - v) * corners[..., 2, :]
    return torch.where(covered, out, torch.zeros_like(out))


def texture(tex: torch.Tensor, uv: torch.Tensor, filter_mode: str = "linear", boundary_mode: str = "wrap") -> torch.Tensor:
    """Bilinear / nearest lookup with nvdiffrast's texel-centre convention."""
    B = uv.shape[0]
    TB, TH, TW, C = tex.shape
    t = tex.expand(B, -1, -1, -1)
    bidx = torch.arange(B, device=uv.device).view(B, 1, 1)

    def fetch(ix, iy):
        if boundary_mode == "wrap":
            ix, iy = ix % TW, iy % TH
            return t[bidx, iy, ix]
        if boundary_mode == "clamp":
            return t[bidx, iy.clamp(0, TH - 1), ix.clamp(0, TW - 1)]
        ok = ((ix >= 0) & (ix < TW) & (iy >= 0) & (iy < TH)).unsqueeze(-1)
        return torch.where(ok, t[bidx, iy.clamp(0, TH - 1), ix.clamp(0, TW - 1)], torch.zeros((), dtype=tex.dtype))

    if filter_mode == "nearest":
        return fetch((uv[..., 0] * TW).floor().long(), (uv[..., 1] * TH).floor().long())
    x = uv[..., 0] * TW - 0.5
    y = uv[..., 1] * TH - 0.5
    x0, y0 = x.floor(), y.floor()
    fx, fy = (x - x0).unsqueeze(-1), (y - y0).unsqueeze(-1)
    x0, y0 = x0.long(), y0.long()
    return ((1 - fx) * (1 - fy) * fetch(x0, y0) + fx * (1 - fy) * fetch(x0 + 1, y0)
            + (1 - fx) * fy * fetch(x0, y0 + 1) + fx * fy * fetch(x0 + 1, y0 + 1))
