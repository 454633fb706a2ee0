"""A naive training step that mirrors the published reference loops (the benchmark's baseline).

Written from the description in shared/METHOD.md, on purpose *without* hysafe's optimisations:

* four separate forward passes (safe image, unsafe image, safe text, unsafe text), plus separate
  passes of the frozen reference towers for Safe-CLIP;
* ``torch.autograd.set_detect_anomaly(True)`` around the step, as in the HySAC training script;
* loss weights normalised twice (HySAC reference defect);
* every loss term computed on its own, in full precision.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hysafe.geometry import lorentz as L


def _ce_both(logits):
    labels = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def _lorentz_contrastive(a, b, curv, scale):
    return _ce_both(-L.dist_pairwise(a, b, curv=curv) * scale)


def _entail(x, y, curv):
    return torch.relu(L.exterior_angle(x, y, curv=curv) - L.half_aperture(x, curv=curv)).mean()


def _cos_contrastive(a, b, scale=100.0):
    return _ce_both(scale * F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T)


def naive_hysac_loss(model, batch):
    v = model.encode_image(batch["image"])
    vs = model.encode_image(batch["unsafe_image"])
    t = model.encode_text(batch["text"])
    ts = model.encode_text(batch["unsafe_text"])
    c, s = model.curv, model.logit_scale
    contrastive = [
        _lorentz_contrastive(t, v, c, s),
        _lorentz_contrastive(ts, vs, c, s),
        _lorentz_contrastive(t, vs, c, s),
        _lorentz_contrastive(ts, v, c, s),
    ]
    entail = [_entail(t, v, c), _entail(ts, vs, c), _entail(v, ts, c)]
    weights = [1.0] * 4 + [1.0] * 3
    total = sum(w * term for w, term in zip(weights, contrastive + entail, strict=True)) / sum(weights)
    return total / sum(weights)  # the reference normalises the weights a second time


def naive_safeclip_loss(model, batch):
    v = model.encode_image(batch["image"])
    vs = model.encode_image(batch["unsafe_image"])
    t = model.encode_text(batch["text"])
    ts = model.encode_text(batch["unsafe_text"])
    v0 = model.encode_image_ref(batch["image"])
    t0 = model.encode_text_ref(batch["text"])
    cos = lambda a, b: (1 - F.cosine_similarity(a, b, dim=-1)).mean()  # noqa: E731
    terms = [
        (cos(t, t0), 0.1),
        (cos(ts, t0), 0.1),
        (cos(v, v0), 0.1),
        (cos(vs, v0), 0.2),
        (_cos_contrastive(t, v0), 0.25),
        (_cos_contrastive(ts, v0), 0.25),
        (_cos_contrastive(t0, v), 0.25),
        (_cos_contrastive(t0, vs), 0.5),
    ]
    return sum(w * term for term, w in terms) / sum(w for _, w in terms)


def naive_step(model, batch, optimizer, kind: str):
    with torch.autograd.set_detect_anomaly(True):
        loss = naive_hysac_loss(model, batch) if kind == "hysac" else naive_safeclip_loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
    optimizer.step()
    model.clamp_parameters_()
    return float(loss)
