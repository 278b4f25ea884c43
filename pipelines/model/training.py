"""The one training loop of fedtwin, plus evaluation and prediction.

Every recipe trains through :func:`local_train`: a device's local epochs, the FedDU server pass, a
twin network's epoch on pseudo-labels, an incremental task with distillation. The hyper-parameters come
in as one :class:`fedtwin.pipelines.model.settings.TrainSettings`. What differs between the callers is the
loss, which comes in through a hook:

- ``loss_fn(model, x, y) -> (loss, metrics)`` returns a scalar loss the loop back-propagates
  (default: cross-entropy on integer labels); ``y`` is whatever the data carries per sample: integer
  labels, soft targets, or a tuple of tensors;
- ``grad_fn(model, x, y) -> (loss_value, metrics)`` instead fills ``param.grad`` itself, for steps whose
  gradient is not the gradient of one loss (e.g. :class:`fedtwin.pipelines.transfer.gradient_mixing.GradientMixer`).

Federated strategies that change the local step do it through the settings and two arguments, not a
copy of the loop: FedProx's proximal term (``settings.prox_mu``) and SCAFFOLD's gradient correction
(``grad_correction``, with ``return_mean_gradient`` for the next control variate) are added to each
step's gradient by :mod:`fedtwin.pipelines.model.step_terms`.

Randomness comes only from the ``generator`` argument: it orders the batches and seeds a forked torch
RNG for anything stochastic inside the model (dropout), so the caller's global RNG is left alone and two
calls with equally seeded generators give identical weights.

Optimizer state (SGD momentum buffers, Adam moments) can outlive a call: ``optimizer_state`` goes in
and ``TrainResult.optimizer_state`` comes out as a ``ModelState``-like dict of numpy arrays keyed
``"<slot>/<parameter name>"`` (``"momentum_buffer/head.weight"``), so device momentum (FedDUM) can be
stored, averaged with ``fedtwin.pipelines.model.state.weighted_average`` and sent back like weights.

Callers that train one model many times (a device host trains hundreds of devices a round) pass a
:class:`TrainWorkspace`: the optimizer is then built once and reset (its state cleared, its
hyper-parameters set) instead of rebuilt, and the model is moved to its device once. Results are the
same bit for bit with or without a workspace.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, cast

import numpy as np
import torch
from torch import nn
from torch.nn import functional as nnf

from fedtwin.pipelines.model.settings import TrainSettings
from fedtwin.pipelines.model.state import ModelState
from fedtwin.pipelines.model.step_terms import step_terms

__all__ = [
    "ClipData",
    "EvalResult",
    "TrainResult",
    "TrainSettings",
    "TrainWorkspace",
    "cross_entropy_loss",
    "evaluate",
    "local_train",
    "predict",
]

logger = logging.getLogger(__name__)

Targets = torch.Tensor | tuple[torch.Tensor, ...]
LossFn = Callable[[nn.Module, torch.Tensor, Any], tuple[torch.Tensor, Mapping[str, float]]]
GradFn = Callable[[nn.Module, torch.Tensor, Any], tuple[float, Mapping[str, float]]]


class ClipData(Protocol):
    """What the loop needs from ``fedtwin.pipelines.data.clips.ClipArrays``: uint8 clips and integer labels
    (read only, so frozen dataclasses match)."""

    @property
    def clips(self) -> np.ndarray: ...

    @property
    def labels(self) -> np.ndarray: ...


Data = ClipData | tuple[Any, Any]


@dataclass(frozen=True)
class TrainResult:
    """Outcome of one :func:`local_train` call.

    Attributes:
        num_examples: distinct examples in the data (the FedAvg weight), not examples x epochs.
        steps: optimizer steps taken.
        mean_loss: loss averaged over all examples seen (batch losses weighted by batch size).
        final_loss: loss of the last batch.
        metrics: the hook's metrics averaged like ``mean_loss``.
        optimizer_state: optimizer slots as numpy, keyed ``"<slot>/<parameter name>"``.
        mean_gradient: the mean raw mini-batch gradient per trainable parameter (float32), when asked for
            (SCAFFOLD's next control variate); empty otherwise.
    """

    num_examples: int
    steps: int
    mean_loss: float
    final_loss: float
    metrics: dict[str, float] = field(default_factory=dict)
    optimizer_state: ModelState = field(default_factory=dict)
    mean_gradient: ModelState = field(default_factory=dict)


@dataclass(frozen=True)
class EvalResult:
    """Accuracy and mean cross-entropy of a model on labelled data."""

    accuracy: float
    loss: float
    num_examples: int


def cross_entropy_loss(model: nn.Module, x: torch.Tensor, y: Any) -> tuple[torch.Tensor, dict[str, float]]:
    """The default ``loss_fn``: cross-entropy on integer labels, reporting the batch accuracy too."""
    logits = model(x)
    loss = nnf.cross_entropy(logits, y)
    accuracy = (logits.detach().argmax(dim=1) == y).float().mean().item()
    return loss, {"accuracy": accuracy}


def _tensor(value: Any, device: torch.device) -> torch.Tensor:
    if isinstance(value, np.ndarray) and not value.flags.writeable:
        # Object-store arrays are read-only views; torch warns on sharing them, and a copy is cheap here.
        value = value.copy()
    return torch.as_tensor(value).to(device)


class _Batches:
    """Clips and per-sample targets held on one device; float conversion happens per batch.

    uint8 clips stay uint8 until a batch is drawn (4x less memory than float32 for a whole shard).
    """

    def __init__(self, data: Data, device: torch.device) -> None:
        if hasattr(data, "clips") and hasattr(data, "labels"):
            clip_data = cast(ClipData, data)  # has both attributes (checked just above)
            clips, targets = clip_data.clips, clip_data.labels
        elif isinstance(data, tuple) and len(data) == 2:
            clips, targets = data
        else:
            raise TypeError(f"data must be ClipArrays or an (x, y) pair, got {type(data).__name__}")
        self.x = _tensor(clips, device)
        if isinstance(targets, tuple):
            self.y: Targets = tuple(_tensor(t, device) for t in targets)
        else:
            self.y = _tensor(targets, device)
        self.n = int(self.x.shape[0])
        lengths = [int(t.shape[0]) for t in (self.y if isinstance(self.y, tuple) else (self.y,))]
        if any(length != self.n for length in lengths):
            raise ValueError(f"data has {self.n} clips but targets of lengths {lengths}")

    def take(self, idx: torch.Tensor) -> tuple[torch.Tensor, Targets]:
        x = self.x[idx]
        # Same scaling as ClipArrays.to_float (multiply by the float32 1/255), so both paths agree bit for bit.
        x = x.float().mul_(1.0 / 255.0) if x.dtype == torch.uint8 else x.float()
        y = tuple(t[idx] for t in self.y) if isinstance(self.y, tuple) else self.y[idx]
        return x, y


def _make_optimizer(params: list[nn.Parameter], settings: TrainSettings) -> torch.optim.Optimizer:
    if settings.optimizer == "adam":
        return torch.optim.Adam(params, lr=settings.lr, weight_decay=settings.weight_decay)
    # TrainSettings admits only "sgd" and "adam".
    return torch.optim.SGD(params, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay)


class TrainWorkspace:
    """What repeated :func:`local_train` calls on one model keep: its parameter list, one optimizer per
    kind (reset per call: state cleared, lr, momentum and weight decay set) and where the model lives.

    A fresh optimizer and a reset one take identical steps: an optimizer's state is created on its first
    step, and the reset leaves exactly the hyper-parameters a fresh one would have.
    """

    def __init__(self) -> None:
        self._model_id: int | None = None
        self._device: torch.device | None = None
        self._named: list[tuple[str, nn.Parameter]] = []
        self._optimizers: dict[str, torch.optim.Optimizer] = {}

    def prepare(self, model: nn.Module, device: torch.device) -> list[tuple[str, nn.Parameter]]:
        """Move ``model`` to ``device`` (only the first time) and return its trainable parameters."""
        if self._model_id != id(model) or self._device != device:
            model.to(device)
            self._named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
            self._model_id, self._device, self._optimizers = id(model), device, {}
        if not model.training:  # only the host's own calls touch its model: the root flag speaks for all
            model.train()
        return self._named

    def optimizer(self, settings: TrainSettings) -> torch.optim.Optimizer:
        """The optimizer of ``settings.optimizer`` with empty state and this call's hyper-parameters."""
        opt = self._optimizers.get(settings.optimizer)
        if opt is None:
            opt = self._optimizers[settings.optimizer] = _make_optimizer([p for _, p in self._named], settings)
            return opt
        opt.state.clear()
        for group in opt.param_groups:
            group["lr"], group["weight_decay"] = settings.lr, settings.weight_decay
            if settings.optimizer == "sgd":
                group["momentum"] = settings.momentum
        return opt


def _load_optimizer_state(
    optimizer: torch.optim.Optimizer, named: list[tuple[str, nn.Parameter]], state: Mapping[str, np.ndarray]
) -> None:
    by_name = dict(named)
    for key, value in state.items():
        slot, _, name = key.partition("/")
        if name not in by_name:
            raise KeyError(f"optimizer_state key {key!r} names no trainable parameter of the model")
        param = by_name[name]
        tensor = torch.as_tensor(np.array(value, copy=True))
        # Adam keeps its step counter as a scalar tensor on the CPU; every other slot follows the parameter.
        tensor = tensor if slot == "step" else tensor.to(param.device)
        optimizer.state[param][slot] = tensor


def _dump_optimizer_state(optimizer: torch.optim.Optimizer, named: list[tuple[str, nn.Parameter]]) -> ModelState:
    out: ModelState = {}
    for name, param in named:
        for slot, value in optimizer.state.get(param, {}).items():
            if isinstance(value, torch.Tensor):
                out[f"{slot}/{name}"] = value.detach().cpu().numpy().copy()
    return out


def local_train(
    model: nn.Module,
    data: Data,
    settings: TrainSettings,
    *,
    generator: torch.Generator,
    loss_fn: LossFn | None = None,
    grad_fn: GradFn | None = None,
    optimizer_state: Mapping[str, np.ndarray] | None = None,
    device: str | torch.device = "cpu",
    workspace: TrainWorkspace | None = None,
    return_optimizer_state: bool = True,
    grad_correction: Mapping[str, np.ndarray] | None = None,
    return_mean_gradient: bool = False,
) -> TrainResult:
    """Train ``model`` in place for ``settings.epochs`` passes over ``data`` in shuffled mini-batches.

    Args:
        model: the module to train; it is moved to ``device`` and left there in train mode.
        data: ``ClipArrays`` (uint8 clips are scaled to ``[0, 1]`` per batch) or an ``(x, y)`` pair of
            tensors/arrays; ``y`` may be integer labels, soft targets or a tuple of per-sample tensors.
        settings: epochs, batch size, learning rate, optimizer (fresh per call, or the workspace's reset
            one), momentum, weight decay and step cap
            (:class:`fedtwin.pipelines.model.settings.TrainSettings`, validated there).
        generator: the only source of randomness (batch order, dropout).
        loss_fn: ``(model, x, y) -> (loss, metrics)``; defaults to :func:`cross_entropy_loss`.
        grad_fn: ``(model, x, y) -> (loss_value, metrics)`` that writes ``param.grad`` itself; exclusive
            with ``loss_fn``.
        optimizer_state: slots from a previous ``TrainResult.optimizer_state`` to start from.
        device: where to train (``"cpu"`` or e.g. ``"cuda"``).
        workspace: kept by a caller that trains the same model many times (see :class:`TrainWorkspace`).
        return_optimizer_state: False leaves ``TrainResult.optimizer_state`` empty (saves copying
            buffers nobody reads).
        grad_correction: arrays by parameter name added to every step's gradient (SCAFFOLD's
            ``c - c_i``); ``settings.prox_mu`` > 0 adds FedProx's proximal gradient the same way
            (:mod:`fedtwin.pipelines.model.step_terms`).
        return_mean_gradient: fill ``TrainResult.mean_gradient`` with the mean raw gradient.

    Returns:
        A :class:`TrainResult`; ``mean_loss`` is NaN when no step was taken.
    """
    if not isinstance(settings, TrainSettings):
        raise TypeError(f"local_train needs a TrainSettings, got {type(settings).__name__}")
    if loss_fn is not None and grad_fn is not None:
        raise ValueError("local_train takes loss_fn or grad_fn, not both")
    device = torch.device(device)
    if workspace is None:
        model.to(device).train()
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        opt = _make_optimizer([p for _, p in named], settings)
    else:
        named = workspace.prepare(model, device)
        opt = workspace.optimizer(settings)
    batches = _Batches(data, device)
    if optimizer_state:
        _load_optimizer_state(opt, named, optimizer_state)
    compute = loss_fn or cross_entropy_loss
    terms = step_terms(named, settings.prox_mu, grad_correction, return_mean_gradient)

    steps, seen, loss_sum, final_loss = 0, 0, 0.0, math.nan
    metric_sums: dict[str, float] = {}
    # Dropout and other in-model randomness draw from the global RNG; fork it and seed the fork from
    # the generator so results depend on the generator alone and the caller's stream is untouched.
    inner_seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
    with _forked_rng(inner_seed, device):
        for _ in range(settings.epochs):
            order = torch.randperm(batches.n, generator=generator).to(device)
            for start in range(0, batches.n, settings.batch_size):
                if settings.max_steps is not None and steps >= settings.max_steps:
                    break
                x, y = batches.take(order[start : start + settings.batch_size])
                opt.zero_grad(set_to_none=True)
                if grad_fn is not None:
                    loss_value, metrics = grad_fn(model, x, y)
                    loss_value = float(loss_value)
                else:
                    loss, metrics = compute(model, x, y)
                    loss.backward()
                    loss_value = loss.item()
                if terms is not None:
                    terms.apply()
                opt.step()
                count = int(x.shape[0])
                steps, seen, final_loss = steps + 1, seen + count, loss_value
                loss_sum += loss_value * count
                for key, value in metrics.items():
                    metric_sums[key] = metric_sums.get(key, 0.0) + float(value) * count
    mean = loss_sum / seen if seen else math.nan
    return TrainResult(
        num_examples=batches.n,
        steps=steps,
        mean_loss=mean,
        final_loss=final_loss,
        metrics={k: v / seen for k, v in metric_sums.items()},
        optimizer_state=_dump_optimizer_state(opt, named) if return_optimizer_state else {},
        mean_gradient=terms.mean_gradient() if terms is not None else {},
    )


@contextlib.contextmanager
def _forked_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's global RNG with ``seed`` inside the block and restore it afterwards.

    On the CPU only the default generator is saved, seeded and restored (what ``fork_rng`` plus
    ``torch.manual_seed`` do there, without their lazy per-backend seeding, which costs about a
    millisecond per call); on CUDA the device's generator is forked too.
    """
    if device.type == "cuda":
        with torch.random.fork_rng(devices=[device.index or 0]):
            torch.manual_seed(seed)
            yield
        return
    saved = torch.default_generator.get_state()
    torch.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        torch.default_generator.set_state(saved)


def predict(
    model: nn.Module,
    data: Data | Any,
    *,
    batch_size: int = 64,
    output: Literal["logits", "probs", "embedding"] = "logits",
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Run ``model`` in eval mode without gradients and return float32 numpy ``(N, K)`` or ``(N, D)``.

    Args:
        model: a video model; ``output="embedding"`` needs ``forward_features``.
        data: ``ClipArrays``, an ``(x, y)`` pair, or bare clips (tensor/array ``(N, T, C, H, W)``).
        batch_size: clips per forward pass.
        output: ``"logits"``, softmax ``"probs"`` or the pooled ``"embedding"``.
        device: where to run.
    """
    if output not in ("logits", "probs", "embedding"):
        raise ValueError(f"predict output={output!r} is unknown; use logits, probs or embedding")
    if not (hasattr(data, "clips") or isinstance(data, tuple)):
        data = (data, torch.zeros(len(cast(Any, data)), dtype=torch.long))  # bare clips: a tensor or an array
    device = torch.device(device)
    batches = _Batches(data, device)
    was_training = model.training
    model.to(device).eval()
    chunks = []
    try:
        with torch.inference_mode():
            for start in range(0, batches.n, batch_size):
                x, _ = batches.take(torch.arange(start, min(start + batch_size, batches.n), device=device))
                if output == "embedding":
                    out = model.forward_features(x)[1]  # type: ignore[operator]  # Module attrs: Tensor | Module
                else:
                    out = model(x)
                    out = out.softmax(dim=1) if output == "probs" else out
                chunks.append(out.float().cpu().numpy())
    finally:
        model.train(was_training)
    if not chunks:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(chunks)


def evaluate(model: nn.Module, data: Data, *, batch_size: int = 64, device: str | torch.device = "cpu") -> EvalResult:
    """Accuracy and mean cross-entropy of ``model`` on labelled ``data`` (eval mode, no gradients)."""
    logits = torch.from_numpy(predict(model, data, batch_size=batch_size, device=device))
    labels = _Batches(data, torch.device("cpu")).y
    if isinstance(labels, tuple) or labels.dim() != 1:
        raise ValueError("evaluate needs integer labels, one per clip")
    n = int(labels.shape[0])
    if n == 0:
        return EvalResult(accuracy=math.nan, loss=math.nan, num_examples=0)
    labels = labels.long()
    loss = nnf.cross_entropy(logits, labels).item()
    accuracy = (logits.argmax(dim=1) == labels).float().mean().item()
    return EvalResult(accuracy=accuracy, loss=loss, num_examples=n)
