"""Decoder layers that live outside memory while a model is quantized one layer at a time.

accelerate offloads a module's tensors to the meta device and hooks it: before each forward call its hook reads the
tensors from their home (the checkpoint's own safetensors files for `"disk"`, CPU memory for `"cpu"`) onto the
execution device, and after it drops them again. [`materialized`] keeps a module's tensors in memory for a whole
block of work (quantizing its Linear modules, or running it on many calibration batches), and [`PackedLayerStore`]
sends the packed modules of a quantized layer to disk and hooks them the same way, so that the memory in use stays
about one decoder layer whatever the depth of the model.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from accelerate.hooks import AlignDevicesHook, SequentialHook, add_hook_to_module
from accelerate.utils import OffloadedWeightsLoader, PrefixedDataset
from safetensors.torch import save_file
from torch import nn
from torch.utils.hooks import RemovableHandle

from ..utils.atomic import atomic_file
from ..utils.system_memory import return_freed_memory
from .layers import set_submodule


def _align_hooks(module: nn.Module) -> list[AlignDevicesHook]:
    """The accelerate device hooks attached to `module` itself (alone or in a `SequentialHook`)."""
    hook = getattr(module, "_hf_hook", None)
    hooks = hook.hooks if isinstance(hook, SequentialHook) else [hook]
    return [h for h in hooks if isinstance(h, AlignDevicesHook)]


def _offloading_hook(module: nn.Module) -> AlignDevicesHook | None:
    return next((hook for hook in _align_hooks(module) if hook.offload), None)


def is_offloaded(module: nn.Module) -> bool:
    """Whether some tensors of `module` (or of its submodules) are offloaded by accelerate (held on the meta device
    and read from elsewhere at forward time)."""
    return any(_offloading_hook(submodule) is not None for submodule in module.modules())


def release_freed_memory() -> None:
    """Collect garbage, then [`return_freed_memory`]."""
    gc.collect()
    return_freed_memory()


def _return_memory_hook(module: nn.Module, inputs: Any, outputs: Any) -> None:
    return_freed_memory()


def return_memory_after_each_layer(layers: nn.ModuleList) -> list[RemovableHandle]:
    """Make each decoder layer of `layers` return the memory freed during its forward call right after it (a forward
    hook; a layer that has it already is left alone): for models whose layers are read from disk at every call, and
    for passes whose per-layer temporaries would otherwise stay resident.

    Returns:
        `list[RemovableHandle]`: the hooks added; remove them to stop.
    """
    return [
        layer.register_forward_hook(_return_memory_hook)
        for layer in layers
        if _return_memory_hook not in layer._forward_hooks.values()
    ]


def execution_device(module: nn.Module) -> torch.device:
    """Where `module` computes: the execution device of its accelerate hooks, else the device of its tensors."""
    for submodule in module.modules():
        for hook in _align_hooks(submodule):
            if hook.execution_device is not None:
                return torch.device(hook.execution_device)
    tensor = next((t for t in [*module.parameters(), *module.buffers()] if not t.is_meta), None)
    return tensor.device if tensor is not None else torch.device("cpu")


@contextlib.contextmanager
def materialized(module: nn.Module) -> Iterator[nn.Module]:
    """Hold every offloaded tensor of `module` in memory, on its execution device, for the duration of the context.

    Forward calls inside the context neither reload nor drop the tensors. On exit, the tensors of the submodules that
    were offloaded are dropped again (modules replaced inside the context, e.g. by their packed versions, are no
    longer part of `module` and stay as they are) and the freed memory goes back to the system
    ([`release_freed_memory`]). A module without offloaded tensors is left alone.
    """
    hooked = [(submodule, hook) for submodule in module.modules() if (hook := _offloading_hook(submodule))]
    loaded = []
    try:
        for submodule, hook in hooked:
            hook.pre_forward(submodule)
            hook.offload = False
            loaded.append((submodule, hook))
        yield module
    finally:
        for submodule, hook in loaded:
            hook.offload = True
            hook.post_forward(submodule, None)
        if loaded:
            release_freed_memory()


STATE_NAME = "state.json"


class _CopyingWeightsLoader(OffloadedWeightsLoader):
    """accelerate's loader of offloaded tensors, returning each tensor as a copy in memory. A tensor read by
    safetensors is a view of its file mapped into memory, one mapping per tensor, and each mapping counts its pages in
    the process's resident memory again: a save, which holds the packed tensors of a whole shard at once, counted each
    layer's file once per tensor (a 16-layer test model with 0.5 MB layer files: 4 MB per layer)."""

    def __getitem__(self, key: str) -> torch.Tensor:
        return super().__getitem__(key).clone()


class PackedLayerStore:
    """Packed modules of quantized decoder layers, written to one safetensors file per layer in `folder` and read
    back at forward time (accelerate offload hooks), so that a quantized model needs no memory for its layers; and
    the state of the quantization (`state.json`: what it is for, its plan, the layers done), so that an interrupted
    one resumes where it stopped.

    Args:
        folder (`str` or `os.PathLike`):
            An existing folder; files are written atomically as `layer-<index>.safetensors` and `state.json`.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.state: dict[str, Any] | None = None

    def resume(self, fingerprint: str) -> dict[str, Any] | None:
        """The saved state of the quantization identified by `fingerprint` (`None` when none was started here).

        Raises:
            `ValueError`: when the folder holds the state of another quantization.
        """
        path = self.folder / STATE_NAME
        if not path.is_file():
            return None
        state = json.loads(path.read_text())
        if state.get("fingerprint") != fingerprint:
            raise ValueError(
                f"{self.folder} holds the layers of another quantization (another model, request or calibration "
                f"data; {len(state.get('done', []))} layers written): delete it to start over, or give another "
                "work_dir (CLI: --work-dir)."
            )
        self.state = state
        return state

    def start(self, fingerprint: str, **facts: Any) -> None:
        """Record a new quantization (`facts`: JSON values it needs to resume), no layer done yet."""
        self.state = {"fingerprint": fingerprint, **facts, "done": []}
        self._write_state()

    @property
    def done(self) -> set[int]:
        """Indices of the layers already written."""
        return set(self.state["done"]) if self.state is not None else set()

    def _write_state(self) -> None:
        with atomic_file(self.folder / STATE_NAME) as staging:
            staging.write_text(json.dumps(self.state, indent=1))

    def path(self, index: int) -> Path:
        """The file of decoder layer `index`."""
        return self.folder / f"layer-{index:05d}.safetensors"

    def remove(self) -> None:
        """Delete the layer files and the state (and the folder, when nothing else is left in it)."""
        for path in [*self.folder.glob("layer-*.safetensors"), self.folder / STATE_NAME]:
            path.unlink(missing_ok=True)
        if self.folder.is_dir() and not any(self.folder.iterdir()):
            self.folder.rmdir()

    def offload(self, index: int, layer: nn.Module, modules: Mapping[str, nn.Module]) -> None:
        """Write the tensors of `modules` (`{name inside the layer: packed module}`, all of decoder layer `index`,
        `layer`) to the layer's file, then drop them from memory and hook each module to read them back when the layer
        runs."""
        tensors = {
            f"{name}.{key}": tensor.detach().to("cpu").contiguous()
            for name, module in modules.items()
            for key, tensor in module.state_dict().items()
        }
        path = self.path(index)
        with atomic_file(path) as staging:
            save_file(tensors, str(staging))
        self.attach(index, modules, execution_device(layer))
        if self.state is not None:
            self.state["done"] = sorted({*self.state["done"], index})
            self._write_state()
        release_freed_memory()

    def restore(
        self, index: int, layer: nn.Module, settings: Mapping[str, tuple[nn.Linear, Any]], backend: Any
    ) -> bool:
        """When an earlier run wrote decoder layer `index`, put its packed modules into `layer`, hooked to its file,
        and return True (else False): `settings` maps each Linear's name to `(the Linear, its ModulePlan)`; `backend`
        builds the empty modules."""
        if index not in self.done:
            return False
        modules = {
            name: backend.empty_linear(
                linear.in_features, linear.out_features, plan.bits, plan.group_size, linear.bias is not None,
                linear.weight.dtype,
            )
            for name, (linear, plan) in settings.items()
        }  # fmt: skip
        self.attach(index, modules, execution_device(layer))
        for name, module in modules.items():
            set_submodule(layer, name, module)
        return True

    def attach(self, index: int, modules: Mapping[str, nn.Module], device: torch.device | str) -> None:
        """Hook `modules` of layer `index` to the tensors in the layer's file; their own tensors are dropped."""
        path = str(self.path(index))
        index_map = {}
        for name, module in modules.items():
            for key, tensor in module.state_dict().items():
                dtype = str(tensor.dtype).removeprefix("torch.")
                index_map[f"{name}.{key}"] = {"safetensors_file": path, "weight_name": f"{name}.{key}", "dtype": dtype}
        loader = _CopyingWeightsLoader(index=index_map)
        for name, module in modules.items():
            hook = AlignDevicesHook(
                execution_device=device,
                offload=True,
                io_same_device=False,
                weights_map=PrefixedDataset(loader, f"{name}."),
                offload_buffers=True,
                place_submodules=True,
            )
            add_hook_to_module(module, hook)
