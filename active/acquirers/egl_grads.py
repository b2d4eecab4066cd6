"""Exact per-target squared gradient norms ‖∇θ loss(f_θ(x), t_k)‖² for EGL++ (docs/anchor.md 6.7).

For one image x and K targets the K gradients are J^T v_k, with J = ∂f/∂θ at x and v_k =
∂loss(f, t_k)/∂f the output cotangent of target k. Everything after the forward pass is linear in
v_k, so the forward is done once and only the K cotangents travel backwards. This module does that
with a *network transpose*: the model is traced once with ``torch.fx``; the forward runs once per
image batch and keeps what each op's backward needs (conv inputs, ReLU masks, max-pool indices);
the backward then runs the K cotangents of every image as one batch, op by op:

- Conv2d: input gradient by one transposed convolution over the B·K cotangents; the weight
  gradient of every (image, target) pair by one batched matrix product of the cotangents with the
  image's unfolded input (B, K·C_out, T) x (B, T, C_in·k²), squared and summed at once, so no
  per-sample gradient outlives its layer; bias gradients are spatial sums.
- BatchNorm2d (eval: a per-channel affine map), ReLU, max-pool (scatter by the forward's indices),
  nearest upsampling (block sums), add, stack, identity/dropout: their exact adjoints.

These are the same numbers autograd gives (tests compare with a plain per-target autograd loop to
1e-5 relative), for one forward instead of K. A graph with another op falls back to
``torch.func`` (functional_call + vjp, vmap over the targets), exact but slower on CPU.

Parameters scored: the weights and biases of Conv2d and Linear layers (the anchor's choice, B17);
``include_bn=True`` adds BatchNorm's γ and β. ``scope="last"`` is the cheap approximation: only the
layers whose output reaches the heatmaps through parameter-free ops, and only along those paths
(for a one-stack hourglass, exactly the last 1x1 convolution's gradient).
"""

from __future__ import annotations

import operator
import weakref
from collections.abc import Callable
from typing import Literal

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vjp, vmap

from hourglass.losses import LossKind

Scope = Literal["all", "last"]
PARAM_LAYERS = (nn.Conv2d, nn.Linear)
_PASS_MODULES = (nn.Identity, nn.Dropout, nn.Dropout2d)
_TRACES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class UnsupportedGraph(Exception):
    """The traced model has an op without a transpose rule here (the caller falls back)."""


def heatmap_output(out: object) -> Tensor:
    """The stacked heatmaps of a model output (``PoseOutput.heatmaps``) or the tensor itself."""
    return out if isinstance(out, Tensor | fx.Proxy) else out.heatmaps  # type: ignore[union-attr]


def grad_parameters(model: nn.Module, include_bn: bool = False) -> list[nn.Parameter]:
    """Conv2d/Linear weights and biases (and BatchNorm's γ, β with ``include_bn``), model order."""
    kinds = PARAM_LAYERS + ((nn.modules.batchnorm._BatchNorm,) if include_bn else ())
    return [
        p
        for m in model.modules()
        if isinstance(m, kinds)
        for p in m.parameters(recurse=False)
        if p.requires_grad
    ]


def target_loss(raw: Tensor, targets: Tensor, kind: LossKind) -> Tensor:
    """Per-sample loss of raw outputs (N, S, J, H, W) against per-stack targets of the same shape.

    mse: mean squared error over stacks, joints and pixels (the anchor's, ``egl=True``). ce: per
    stack and joint, cross-entropy of the spatial softmax against the target map normalised to sum
    1, averaged over joints with target mass and over stacks.
    """
    raw = raw if raw.dtype == torch.float64 else raw.float()
    targets = targets.to(raw.dtype)
    if kind == "mse":
        return ((raw - targets) ** 2).flatten(1).mean(1)
    if kind == "ce":
        n, s, j = raw.shape[:3]
        logp = torch.log_softmax(raw.reshape(n, s, j, -1), dim=-1)
        t = targets.reshape(n, s, j, -1).clamp_min(0)
        mass = t.sum(-1, keepdim=True)
        q = t / mass.clamp_min(1e-12)
        mask = (mass.squeeze(-1) > 0).to(raw.dtype)
        per_joint = -(q * logp).sum(-1) * mask
        return (per_joint.sum(-1) / mask.sum(-1).clamp_min(1.0)).mean(-1)
    raise ValueError(f"unknown loss {kind!r}; use mse or ce")


def loss_cotangents(raw: Tensor, targets: Tensor, kind: LossKind) -> Tensor:
    """∂ loss(raw_b, targets_bk) / ∂ raw_b for every (b, k): raw (B, ...), targets (B, K, ...)."""
    with torch.enable_grad():
        raw = raw.detach() if raw.dtype == torch.float64 else raw.detach().float()
        rep = raw.unsqueeze(1).expand(*targets.shape).clone().requires_grad_(True)
        loss = target_loss(rep.flatten(0, 1), targets.flatten(0, 1), kind).sum()
        (grad,) = torch.autograd.grad(loss, rep)
    return grad


# -- the transpose engine -------------------------------------------------------------------
class _Heatmaps(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return heatmap_output(self.model(x))


def _trace(model: nn.Module) -> fx.GraphModule:
    gm = _TRACES.get(model)
    if gm is None:
        try:
            gm = fx.symbolic_trace(_Heatmaps(model))
        except Exception as exc:  # data-dependent control flow etc.
            raise UnsupportedGraph(f"cannot trace {type(model).__name__}: {exc}") from exc
        _TRACES[model] = gm
    return gm


def _is_bn(mod: nn.Module) -> bool:
    return isinstance(mod, nn.modules.batchnorm._BatchNorm)


class _Tape:
    """One forward pass of a traced model at batch B, keeping what the transpose needs."""

    def __init__(self, gm: fx.GraphModule, images: Tensor) -> None:
        self.gm, self.saved, self.depends = gm, {}, set()
        env: dict[fx.Node, object] = {}
        for node in gm.graph.nodes:
            if node.op == "output":
                self.output_node = node.args[0]
                self.output = env[self.output_node]
                break
            args = fx.node.map_arg(node.args, lambda n: env[n])
            kwargs = fx.node.map_arg(node.kwargs, lambda n: env[n])
            env[node] = self._run(node, args, kwargs, images)
            inputs = [a for a in node.all_input_nodes]
            if any(a in self.depends for a in inputs) or self._has_params(node):
                self.depends.add(node)

    def _has_params(self, node: fx.Node) -> bool:
        return node.op == "call_module" and isinstance(
            self.gm.get_submodule(node.target), PARAM_LAYERS + (nn.modules.batchnorm._BatchNorm,)
        )

    def _run(self, node: fx.Node, args: tuple, kwargs: dict, images: Tensor) -> object:
        if node.op == "placeholder":
            return images
        if node.op == "get_attr":
            return operator.attrgetter(node.target)(self.gm)
        if node.op == "call_module":
            mod = self.gm.get_submodule(node.target)
            x = args[0]
            if isinstance(mod, nn.ReLU):
                out = F.relu(x)  # never in place: the input may be kept by another node
                self.saved[node] = out > 0
                return out
            if isinstance(mod, nn.MaxPool2d):
                out, idx = F.max_pool2d(
                    x,
                    mod.kernel_size,
                    mod.stride,
                    mod.padding,
                    mod.dilation,
                    mod.ceil_mode,
                    return_indices=True,
                )
                self.saved[node] = (idx, x.shape)
                return out
            if isinstance(mod, nn.Conv2d | nn.Linear) or _is_bn(mod):
                if _is_bn(mod) and mod.training:
                    raise UnsupportedGraph("BatchNorm in training mode; call model.eval() first")
                self.saved[node] = x
            return mod(*args, **kwargs)
        if node.op == "call_method":
            return getattr(args[0], node.target)(*args[1:], **kwargs)
        return node.target(*args, **kwargs)


def _conv_norms(mod: nn.Conv2d, x: Tensor, g: Tensor) -> Tensor:
    """(B, K) squared norms of the weight (and bias) gradients; x (B, C, H, W), g (B, K, Co, Ho, Wo).

    Per image, the K targets' weight gradients are one weight gradient of a convolution with K·Co
    output channels (the image's input, the K cotangents stacked as channels), so the library's
    convolution-backward kernel computes all K at once without unfolding the input.
    """
    b, k, co = g.shape[:3]
    w = mod.weight
    stacked_shape = (k * co, *w.shape[1:])
    rows = []
    # B is a handful of images; each call covers its K targets. One grouped call over all B
    # (groups = B) gives the same numbers but was 1.0-2.3x slower on the CPU (small and paper sizes).
    for i in range(b):
        (_, weight_grads, _) = torch.ops.aten.convolution_backward(
            g[i].reshape(1, k * co, *g.shape[3:]),
            x[i : i + 1],
            w.new_empty(1).expand(stacked_shape),
            None,
            _pair(mod.stride),
            _conv_padding(mod),
            _pair(mod.dilation),
            False,
            [0, 0],
            1,
            [False, True, False],
        )
        rows.append(weight_grads.reshape(k, -1).pow(2).sum(-1))
    norms = torch.stack(rows)
    if mod.bias is not None:
        norms = norms + g.sum(dim=(3, 4)).pow(2).sum(-1)
    return norms


def _pair(value: int | tuple[int, ...]) -> list[int]:
    return list(value) if isinstance(value, tuple) else [int(value)] * 2


def _conv_padding(mod: nn.Conv2d) -> list[int]:
    if isinstance(mod.padding, str):
        if mod.padding == "valid":
            return [0, 0]
        if mod.stride not in (1, (1, 1)):
            raise UnsupportedGraph("string padding on a strided conv")
        ks, dil = _pair(mod.kernel_size), _pair(mod.dilation)
        if any((d * (kk - 1)) % 2 for kk, d in zip(ks, dil, strict=True)):
            raise UnsupportedGraph("'same' padding with an even kernel")
        return [d * (kk - 1) // 2 for kk, d in zip(ks, dil, strict=True)]
    return _pair(mod.padding)


def _is_pointwise(mod: nn.Conv2d) -> bool:
    return mod.kernel_size == (1, 1) and mod.stride == (1, 1) and mod.padding in ((0, 0), "valid")


def _conv_input_grad(mod: nn.Conv2d, x: Tensor, g: Tensor) -> Tensor:
    b, k = g.shape[:2]
    if _is_pointwise(mod):  # a 1x1 convolution's adjoint is one matrix product
        w = mod.weight.view(mod.out_channels, mod.in_channels).t()
        return torch.matmul(w, g.flatten(-2)).view(b, k, *x.shape[1:])
    shape = (b * k, *x.shape[1:])
    gin = torch.nn.grad.conv2d_input(
        shape, mod.weight, g.flatten(0, 1), mod.stride, _conv_padding(mod), mod.dilation, mod.groups
    )
    return gin.view(b, k, *x.shape[1:])


def _bn_scale(mod: nn.Module) -> Tensor:
    scale = torch.rsqrt(mod.running_var + mod.eps)
    return scale * mod.weight if mod.weight is not None else scale


def _transpose(tape: _Tape, cotangents: Tensor, include_bn: bool, scope: Scope) -> Tensor:
    """Run ``cotangents`` (B, K, *output) back through the tape; (B, K) squared gradient norms."""
    gm = tape.gm
    b, k = cotangents.shape[:2]
    norms = torch.zeros(b, k, dtype=torch.float64, device=cotangents.device)
    grads: dict[fx.Node, Tensor] = {tape.output_node: cotangents}

    def give(node: object, g: Tensor) -> None:
        if isinstance(node, fx.Node) and node in tape.depends:
            grads[node] = grads[node] + g if node in grads else g

    for node in reversed(gm.graph.nodes):
        g = grads.pop(node, None)
        if g is None:
            continue
        if node.op == "call_module":
            mod = gm.get_submodule(node.target)
            src = node.args[0]
            if isinstance(mod, nn.Conv2d):
                if mod.groups != 1:
                    raise UnsupportedGraph("grouped convolution")
                x = tape.saved[node]
                norms += _conv_norms(mod, x, g).double()
                if scope == "all" and src in tape.depends:
                    give(src, _conv_input_grad(mod, x, g))
            elif isinstance(mod, nn.Linear):
                x = tape.saved[node]
                if x.ndim != 2:
                    raise UnsupportedGraph("Linear on a tensor with more than 2 dimensions")
                sq = g.pow(2).sum(-1)  # the weight gradient g x^T has norm |g| |x|
                norms += (sq * x.pow(2).sum(-1, keepdim=True)).double()
                if mod.bias is not None:
                    norms += sq.double()
                if scope == "all":
                    give(src, g @ mod.weight)
            elif _is_bn(mod):
                x = tape.saved[node]
                shape = (1, -1) + (1,) * (x.ndim - 2)
                if include_bn and mod.affine:
                    xhat = (x - mod.running_mean.view(shape)) * torch.rsqrt(
                        mod.running_var + mod.eps
                    ).view(shape)
                    dims = tuple(range(3, g.ndim))
                    norms += (g * xhat.unsqueeze(1)).sum(dims).pow(2).sum(-1).double()
                    norms += g.sum(dims).pow(2).sum(-1).double()
                give(src, g * _bn_scale(mod).view(shape).unsqueeze(0))
            elif isinstance(mod, nn.ReLU):
                give(src, g * tape.saved[node].unsqueeze(1))
            elif isinstance(mod, nn.MaxPool2d):
                idx, in_shape = tape.saved[node]
                out = g.new_zeros(b, k, *in_shape[1:-2], in_shape[-2] * in_shape[-1])
                index = idx.flatten(-2).unsqueeze(1).expand(b, k, *idx.shape[1:-2], -1)
                give(src, out.scatter_add_(-1, index, g.flatten(-2)).view(b, k, *in_shape[1:]))
            elif isinstance(mod, nn.Upsample):
                give(src, _upsample_adjoint(mod, g))
            elif isinstance(mod, _PASS_MODULES):
                give(src, g)
            else:
                raise UnsupportedGraph(f"no transpose for module {type(mod).__name__}")
        elif node.op == "call_function" and node.target in (operator.add, torch.add):
            if len(node.args) != 2 or node.kwargs:
                raise UnsupportedGraph("add with alpha or more arguments")
            for arg in node.args:
                give(arg, g)
        elif node.op == "call_function" and node.target is torch.stack:
            dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
            if dim == 0:
                raise UnsupportedGraph("stack along the batch dimension")
            dim = dim + 1 if dim > 0 else dim
            for arg, part in zip(node.args[0], g.unbind(dim), strict=True):
                give(arg, part)
        elif node.op == "placeholder":
            continue
        else:
            raise UnsupportedGraph(f"no transpose for {node.op} {node.target}")
    return norms


def _upsample_adjoint(mod: nn.Upsample, g: Tensor) -> Tensor:
    scale = mod.scale_factor
    if mod.mode != "nearest" or scale is None:
        raise UnsupportedGraph("only nearest upsampling by a scale factor")
    scales = scale if isinstance(scale, tuple) else (scale, scale)
    if any(float(s) != int(s) for s in scales) or g.ndim != 5:
        raise UnsupportedGraph("only integer 2-D nearest upsampling")
    sh, sw = (int(s) for s in scales)
    b, k, c, h, w = g.shape
    return g.view(b, k, c, h // sh, sh, w // sw, sw).sum(dim=(4, 6))


# -- public entry points ----------------------------------------------------------------------
Method = Literal["auto", "transpose", "autograd", "vmap"]
# On the CPU, above this many activation elements per image (a 256-channel map at 64x64 has 2^20)
# the kernels already run at full efficiency for one cotangent, so batching them gains nothing and
# costs cache traffic: there autograd's own backward, once per target after one shared forward, is
# faster than the transpose (measured on the paper model: docs/studies/2026-11-22-egl-cost.md).
AUTOGRAD_ABOVE = 2**18


def sq_grad_norms_of_cotangents(
    model: nn.Module,
    images: Tensor,
    cotangents: Callable[[Tensor], Tensor],
    include_bn: bool = False,
    scope: Scope = "all",
    method: Method = "auto",
    max_pairs: int | None = None,
) -> Tensor:
    """(B, K) ‖J_θ^T v_bk‖² for v = ``cotangents(raw)`` (B, K, *raw.shape[1:]), one forward per image.

    ``raw`` is the model's (eval mode, float32) stacked heatmap output for ``images``. ``method``:
    ``transpose`` sends the K cotangents back through the traced network as one batch;
    ``autograd`` runs autograd's backward once per target after one shared forward per image;
    ``auto`` picks autograd for large activations on the CPU (:data:`AUTOGRAD_ABOVE`), else the
    transpose, and falls back to torch.func (``vmap``) when the graph has an op without a rule.
    All give the same numbers. ``max_pairs`` bounds the (image, target) pairs the transpose sends
    back at once: the K axis is split into chunks that reuse the one forward.
    """
    was_training = model.training
    model.eval()
    images = _floating(images)
    try:
        if method == "auto" and scope == "all" and prefers_autograd(model, images):
            method = "autograd"
        if method == "autograd":
            return _autograd_norms(model, images, cotangents, include_bn)
        with torch.no_grad():
            if method in ("auto", "transpose"):
                try:
                    tape = _Tape(_trace(model), images)
                    v = cotangents(tape.output).to(tape.output.dtype)
                    step = max(1, (max_pairs or v.shape[0] * v.shape[1]) // v.shape[0])
                    parts = [
                        _transpose(tape, v[:, i : i + step], include_bn, scope)
                        for i in range(0, v.shape[1], step)
                    ]
                    return torch.cat(parts, 1).to(tape.output.dtype)
                except UnsupportedGraph:
                    if method == "transpose" or scope != "all":
                        raise
            return _vmap_norms(model, images, cotangents, include_bn)
    finally:
        model.train(was_training)


_LARGEST: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def prefers_autograd(model: nn.Module, images: Tensor) -> bool:
    """True on the CPU when the model's largest activation per image exceeds AUTOGRAD_ABOVE."""
    if images.device.type != "cpu":
        return False
    sizes = _LARGEST.setdefault(model, {})
    key = tuple(images.shape[1:])
    if key not in sizes:
        largest = [0]

        def hook(_mod: nn.Module, _inp: object, out: object) -> None:
            if isinstance(out, Tensor):
                largest[0] = max(largest[0], out[0].numel())

        handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
        try:
            with torch.no_grad():
                model(images[:1])
        finally:
            for h in handles:
                h.remove()
        sizes[key] = largest[0]
    return sizes[key] > AUTOGRAD_ABOVE


def _autograd_norms(
    model: nn.Module, images: Tensor, cotangents: Callable[[Tensor], Tensor], include_bn: bool
) -> Tensor:
    """Per image one forward with autograd's graph, then one backward per target (retained graph)."""
    params = grad_parameters(model, include_bn)
    with torch.enable_grad():
        raws = [heatmap_output(model(images[b : b + 1])) for b in range(images.shape[0])]
        v = cotangents(torch.cat([r.detach() for r in raws]))
        out = torch.zeros(v.shape[:2], dtype=torch.float64, device=images.device)
        for b, raw in enumerate(raws):
            for k in range(v.shape[1]):
                last = k == v.shape[1] - 1
                grads = torch.autograd.grad(
                    raw, params, v[b : b + 1, k].to(raw.dtype), retain_graph=not last
                )
                out[b, k] = torch.stack([g.double().pow(2).sum() for g in grads]).sum()
            raws[b] = None  # free this image's graph
    return out.to(images.dtype)


def _floating(images: Tensor) -> Tensor:
    return images if images.is_floating_point() else images.float()


def _vmap_norms(
    model: nn.Module, images: Tensor, cotangents: Callable[[Tensor], Tensor], include_bn: bool
) -> Tensor:
    """torch.func fallback: per image, one forward (vjp) and the K cotangents through vmap."""
    chosen = {id(p) for p in grad_parameters(model, include_bn)}
    named = dict(model.named_parameters())
    picked = {n: p.detach() for n, p in named.items() if id(p) in chosen}
    fixed = {n: p.detach() for n, p in named.items() if id(p) not in chosen}
    fixed.update(dict(model.named_buffers()))
    v_all = cotangents(heatmap_output(model(images)))  # (B, K, ...): every image's own targets
    rows = []
    for x, v in zip(images, v_all, strict=True):

        def f(params: dict[str, Tensor], x: Tensor = x) -> Tensor:
            return heatmap_output(functional_call(model, {**params, **fixed}, (x[None],)))

        with torch.enable_grad():
            _, pullback = vjp(f, picked)
            grads = vmap(pullback)(v.unsqueeze(1).to(x.dtype))[0]
        rows.append(sum(g.flatten(1).pow(2).sum(1) for g in grads.values()))
    return torch.stack(rows)


def per_target_sq_grad_norms(
    model: nn.Module,
    images: Tensor,
    targets: Tensor,
    loss: LossKind = "mse",
    include_bn: bool = False,
    scope: Scope = "all",
    max_pairs: int | None = None,
) -> Tensor:
    """(B, K) ‖∇θ loss(f_θ(x_b), targets[b, k])‖² over Conv2d/Linear parameters (+ BN with ``include_bn``).

    ``model`` is used in eval mode; ``images`` (B, 3, H, W) float; ``targets`` (B, K, *heatmaps)
    shaped like the model's stacked heatmap output (B, S, J, H, W) with a K axis; ``loss`` is
    :func:`target_loss` (mse: the anchor's). Exact and fast: one forward per image batch, then the
    B·K output cotangents through the network's transpose as one batch (module docstring).
    """
    if targets.ndim < 3 or targets.shape[0] != images.shape[0]:
        raise ValueError(
            f"targets must be (B, K, *heatmaps) with B = {images.shape[0]}, got {tuple(targets.shape)}"
        )
    return sq_grad_norms_of_cotangents(
        model,
        images,
        lambda raw: loss_cotangents(raw, targets.to(raw.device), loss),
        include_bn,
        scope,
        max_pairs=max_pairs,
    )


def reference_sq_grad_norms(
    model: nn.Module,
    images: Tensor,
    targets: Tensor,
    loss: LossKind = "mse",
    include_bn: bool = False,
) -> Tensor:
    """The slow reference: one forward and one autograd backward per (image, target) pair."""
    was_training = model.training
    model.eval()
    params = grad_parameters(model, include_bn)
    out = torch.zeros(targets.shape[:2], dtype=torch.float64)
    try:
        for b in range(images.shape[0]):
            for k in range(targets.shape[1]):
                with torch.enable_grad():
                    raw = heatmap_output(model(_floating(images[b : b + 1])))
                    value = target_loss(raw, targets[b : b + 1, k].to(raw.dtype), loss).sum()
                    grads = torch.autograd.grad(value, params)
                out[b, k] = sum(float(g.double().pow(2).sum()) for g in grads)
    finally:
        model.train(was_training)
    return out.to(images.dtype if images.is_floating_point() else torch.float32)
