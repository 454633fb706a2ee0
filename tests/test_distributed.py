"""Cross-process negatives with 2 gloo processes on CPU."""

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hysafe.losses import euclidean_info_nce, lorentz_info_nce


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, a, b, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    n = a.shape[0] // world
    la = a[rank * n : (rank + 1) * n].clone().requires_grad_()
    lb = b[rank * n : (rank + 1) * n].clone().requires_grad_()
    loss_e = euclidean_info_nce(la, lb, logit_scale=5.0)
    loss_l = lorentz_info_nce(la, lb, curv=1.0, logit_scale=5.0)
    (loss_e + loss_l).backward()
    out[rank] = torch.cat(
        [torch.stack([loss_e.detach(), loss_l.detach()]), la.grad.flatten(), lb.grad.flatten()]
    )
    dist.destroy_process_group()


def test_two_process_loss_and_grads_equal_single_process():
    g = torch.Generator().manual_seed(0)
    a, b = (
        torch.randn(8, 5, generator=g, dtype=torch.float64),
        torch.randn(8, 5, generator=g, dtype=torch.float64),
    )
    manager = mp.Manager()
    out = manager.dict()
    mp.spawn(_worker, args=(2, _free_port(), a, b, out), nprocs=2, join=True)
    ga, gb = a.clone().requires_grad_(), b.clone().requires_grad_()
    le = euclidean_info_nce(ga, gb, logit_scale=5.0)
    ll = lorentz_info_nce(ga, gb, curv=1.0, logit_scale=5.0)
    (le + ll).backward()
    # each rank's loss covers its own queries against the global batch: their mean is the global loss
    mean_rank_loss = (out[0][:2] + out[1][:2]) / 2
    assert torch.allclose(mean_rank_loss, torch.stack([le, ll]).detach(), atol=1e-10)
    # gradients reach each rank's slice from every rank's loss (the gather keeps them); the
    # global loss is their mean, so each slice's gradient is the global gradient times world size
    grads_a = torch.cat([out[r][2:22].view(4, 5) for r in range(2)])
    grads_b = torch.cat([out[r][22:].view(4, 5) for r in range(2)])
    assert torch.allclose(grads_a / 2, ga.grad, atol=1e-10)
    assert torch.allclose(grads_b / 2, gb.grad, atol=1e-10)
