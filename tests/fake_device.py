"""A second device for CPU-only machines: run real pipeline code with its tensors on a device that is
not the CPU, and fail on every operation that mixes devices the way a real GPU run would.

torch's FakeTensorMode knows the device rules (which ops may mix a device tensor with a CPU one:
0-dim CPU scalars, copies, CPU indices into a device tensor ...) and raises
FakeTensorDeviceMismatchError otherwise, but it carries no values, so data-dependent code
(``nonzero``, ``.item()``, ``if mask.any()``) cannot run under it. This module pairs the two:

- ``OnDevice`` is a tensor subclass that holds a real CPU tensor and reports ``device == DEVICE``;
- ``FakeDeviceMode`` (a TorchDispatchMode) runs every op that touches such a tensor twice: once under
  FakeTensorMode on fake copies of the inputs (same shapes, dtypes and claimed devices) for the device
  of each output -- or FakeTensorDeviceMismatchError -- and once on the real CPU values; factory calls
  with ``device=DEVICE`` (``torch.zeros(..., device=dev)``) land here too;
- on top of FakeTensorMode's rules it applies one that fake tensors let through: a CPU tensor indexed
  with device indices (``cpu_mask[device_idx]``), which CUDA refuses.

Why the device is labelled "lazy" and not "cuda": on a CPU-only build of torch, autograd and Python
indexing need a device guard for the tensor's device, and none is registered for CUDA (the process
aborts: "PyTorch is not linked with support for cuda devices"; FakeTensorMode has the same limit).
The lazy device has a no-op guard and no code path of ours or of diffusers treats it specially, so the
placement rules are exactly CUDA's. What this cannot reach, stated rather than hidden: branches taken
only when ``device.type == "cuda"`` (fp16 weights, nvdiffrast, torch.cuda memory calls); those run in
the ``cuda``-marked tests on a real GPU (scripts/gpu_check.sh).
"""
from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch._subclasses.fake_tensor import FakeTensorDeviceMismatchError, FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_unflatten

DEVICE = torch.device("lazy")
aten = torch.ops.aten


class DeviceMixError(RuntimeError):
    """An operation mixed CPU and device tensors in a way a real GPU run refuses."""


class OnDevice(torch.Tensor):
    """A tensor that claims to live on DEVICE and keeps its values in a real CPU tensor ``elem``."""

    elem: torch.Tensor

    @staticmethod
    def __new__(cls, elem: torch.Tensor, requires_grad: bool = False):
        assert type(elem) is torch.Tensor and elem.device.type == "cpu", type(elem)
        out = torch.Tensor._make_wrapper_subclass(cls, elem.shape, strides=elem.stride(), storage_offset=elem.storage_offset(),
                                                  dtype=elem.dtype, layout=elem.layout, device=DEVICE,
                                                  requires_grad=requires_grad)
        out.elem = elem
        return out

    def __repr__(self) -> str:
        return f"OnDevice({self.elem!r})"

    # a traceable wrapper: nn.Module.to() swaps parameters instead of assigning .data
    def __tensor_flatten__(self):
        return ["elem"], None

    @staticmethod
    def __tensor_unflatten__(inner, meta, outer_size, outer_stride):
        return OnDevice(inner["elem"])

    # torch.save of a device tensor, loaded back with map_location="cpu" (what our checkpoints do)
    # (pickled as the plain CPU tensor it holds, so weights_only loading accepts it)
    def __reduce_ex__(self, protocol):
        return self.elem.__reduce_ex__(protocol)

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        # Python indexing takes a device guard in torch's C++ bindings before it dispatches, which a
        # CPU-only build cannot give: it is rebuilt here from dispatched aten view / index ops
        if func is torch.Tensor.__getitem__:
            return _getitem(*args)
        if func is torch.Tensor.__setitem__:
            return _setitem(*args)
        if func in (torch.Tensor.nonzero, torch.nonzero) and not (kwargs or {}).get("as_tuple"):  # same guard
            return aten.nonzero.default(args[0])
        if func in _HOST_READS:  # a copy to the host, as on a real GPU
            return func(aten._to_copy.default(args[0], device=torch.device("cpu")), *args[1:], **(kwargs or {}))
        with torch._C.DisableTorchFunctionSubclass():
            return func(*args, **(kwargs or {}))

    def numpy(self, *args, **kwargs):  # what real CUDA says
        raise TypeError(f"can't convert {DEVICE} device type tensor to numpy. Use Tensor.cpu() to copy the tensor to host memory first.")

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        return _dispatch(func, args, kwargs or {})


_HOST_READS = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__float__, torch.Tensor.__int__, torch.Tensor.__bool__,
               torch.Tensor.__index__, torch.Tensor.__format__, torch.Tensor.cpu}


def _is_device(d: Any) -> bool:
    if isinstance(d, str):
        return d.split(":")[0] == DEVICE.type
    return isinstance(d, torch.device) and d.type == DEVICE.type


def _touches_device(flat: list) -> bool:
    return any(isinstance(a, OnDevice) or _is_device(a) for a in flat)


_INDEX_OPS = {aten.index.Tensor, aten.index_put.default, aten.index_put_.default, aten._index_put_impl_.default,
              aten._unsafe_index.Tensor, aten._unsafe_index_put.default}


def _check_indexing(func, args) -> None:
    """CPU tensor indexed with device indices: FakeTensorMode lets it through, real CUDA does not."""
    if func not in _INDEX_OPS or isinstance(args[0], OnDevice):
        return
    indices = args[1] if len(args) > 1 else []
    if any(isinstance(i, OnDevice) for i in indices if i is not None):
        raise DeviceMixError(f"{func}: a CPU tensor {tuple(args[0].shape)} is indexed with device indices; "
                             "real CUDA raises 'indices should be either on cpu or on the same device as the indexed tensor'")


def _basic_and_advanced(t: torch.Tensor, idx):
    """Apply the basic parts of a Python index (ints, slices, None, ...) as aten views of t; return the
    view and the advanced (tensor) indices as an aten.index list."""
    items = list(idx) if isinstance(idx, tuple) else [idx]
    items = [torch.tensor(i) if isinstance(i, list) else i for i in items]
    consumed = sum(i.ndim if isinstance(i, torch.Tensor) and i.dtype == torch.bool else 1
                   for i in items if i is not None and i is not Ellipsis)
    if Ellipsis in [i for i in items if not isinstance(i, torch.Tensor)]:
        k = next(n for n, i in enumerate(items) if i is Ellipsis)
        items = items[:k] + [slice(None)] * (t.ndim - consumed) + items[k + 1:]
    view, dim, advanced = t, 0, {}
    for i in items:
        if i is None:
            view, dim = aten.unsqueeze.default(view, dim), dim + 1
        elif isinstance(i, slice):
            view = aten.slice.Tensor(view, dim, i.start, i.stop, 1 if i.step is None else i.step)
            dim += 1
        elif isinstance(i, torch.Tensor) and i.ndim == 0 and i.dtype not in (torch.bool, torch.uint8) and not isinstance(i, OnDevice):
            view = aten.select.int(view, dim, int(i))
        elif isinstance(i, torch.Tensor):
            advanced[dim] = i
            dim += i.ndim if i.dtype == torch.bool else 1
        else:
            view = aten.select.int(view, dim, int(i))
    indices = [advanced.get(d) for d in range(max(advanced) + 1)] if advanced else None
    return view, indices


def _getitem(t, idx):
    view, indices = _basic_and_advanced(t, idx)
    return view if indices is None else aten.index.Tensor(view, indices)


def _setitem(t, idx, value):
    view, indices = _basic_and_advanced(t, idx)
    if not isinstance(value, torch.Tensor):
        value = torch.tensor(value, dtype=t.dtype)
    if indices is None:
        aten.copy_.default(view, value)
    else:
        aten.index_put_.default(view, indices, value)


_fake_mode: FakeTensorMode | None = None


def _fake_devices(func, flat: list, spec, n_out_hint=None):
    """Output devices of ``func`` under FakeTensorMode (None when the fake run cannot tell)."""
    global _fake_mode
    if _fake_mode is None:
        _fake_mode = FakeTensorMode(allow_non_fake_inputs=False)
    mode = _fake_mode
    with mode:
        fake_flat = []
        for a in flat:
            if isinstance(a, torch.Tensor):
                t = a.elem if isinstance(a, OnDevice) else a
                dev = DEVICE if isinstance(a, OnDevice) else t.device
                f = torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=dev)
                fake_flat.append(f)
            else:
                fake_flat.append(a)
        fargs, fkwargs = tree_unflatten(fake_flat, spec)
        try:
            out = func(*fargs, **fkwargs)
        except FakeTensorDeviceMismatchError as e:
            raise DeviceMixError(f"{func}: {e}") from None
        except Exception:  # data-dependent shapes, backend-only metadata queries: decide by the simple rule
            return None
    return [o.device if isinstance(o, torch.Tensor) else None for o in tree_flatten(out)[0]]


_verdicts: dict = {}  # (op, what its inputs are) -> output devices, or the mismatch it raised


def _signature(func, flat: list) -> tuple:
    """What decides an op's output devices: the op, and each input's device, 0-dim-ness and dtype."""
    def one(a):
        if isinstance(a, torch.Tensor):
            return (DEVICE.type if isinstance(a, OnDevice) else a.device.type, a.dim() == 0, a.dtype)
        if isinstance(a, torch.device):
            return ("device", a.type)
        return type(a).__name__
    return (func, tuple(one(a) for a in flat))


def _devices(func, flat: list, spec):
    key = _signature(func, flat)
    if key not in _verdicts:
        try:
            _verdicts[key] = _fake_devices(func, flat, spec)
        except DeviceMixError as e:
            _verdicts[key] = e
    verdict = _verdicts[key]
    if isinstance(verdict, DeviceMixError):
        raise verdict
    return verdict


def _dispatch(func, args, kwargs):
    flat, spec = tree_flatten((args, kwargs))
    if not _touches_device(flat):
        return func(*args, **kwargs)
    _check_indexing(func, args)
    devices = _devices(func, flat, spec)
    # the real computation, on the CPU
    real_flat = [a.elem if isinstance(a, OnDevice) else (torch.device("cpu") if _is_device(a) else a) for a in flat]
    rargs, rkwargs = tree_unflatten(real_flat, spec)
    out = func(*rargs, **rkwargs)
    out_flat, out_spec = tree_flatten(out)
    if devices is None or len(devices) != len(out_flat):
        inputs_on = any(isinstance(a, OnDevice) for a in flat)
        device_kw = _is_device(kwargs.get("device"))
        cpu_kw = kwargs.get("device") is not None and not device_kw
        to_device = device_kw or (inputs_on and not cpu_kw)
        devices = [DEVICE if to_device else torch.device("cpu")] * len(out_flat)
    # in-place ops and out= return their (wrapped) input: hand that back, not a new wrapper
    wrapped = []
    for o, d in zip(out_flat, devices):
        if isinstance(o, torch.Tensor) and d is not None and d.type == DEVICE.type:
            same = next((a for a in flat if isinstance(a, OnDevice) and a.elem is o), None)
            wrapped.append(same if same is not None else OnDevice(o))
        else:
            wrapped.append(o)
    return tree_unflatten(wrapped, out_spec)


class FakeDeviceMode(TorchDispatchMode):
    """Within: factory calls with device=DEVICE make OnDevice tensors (see the module docstring)."""

    def __enter__(self):
        # as FakeTensorMode does: torch.tensor(..., device=DEVICE) builds on the CPU, then moves through
        # the dispatcher (where this mode sees it)
        self._prev_lift = torch._C._only_lift_cpu_tensors()
        torch._C._set_only_lift_cpu_tensors(True)
        return super().__enter__()

    def __exit__(self, *exc):
        torch._C._set_only_lift_cpu_tensors(self._prev_lift)
        return super().__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return _dispatch(func, args, kwargs or {})


@contextlib.contextmanager
def fake_device():
    """Within: tensors made with ``device=DEVICE`` or moved there are OnDevice."""
    with FakeDeviceMode():
        yield
