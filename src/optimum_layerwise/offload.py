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
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from accelerate.hooks import AlignDevicesHook, SequentialHook, add_hook_to_module
from accelerate.utils import OffloadedWeightsLoader, PrefixedDataset
from safetensors.torch import save_file
from torch import nn

from .atomic import atomic_file


def _offloading_hook(module: nn.Module) -> AlignDevicesHook | None:
    hook = getattr(module, "_hf_hook", None)
    hooks = hook.hooks if isinstance(hook, SequentialHook) else [hook]
    return next((h for h in hooks if isinstance(h, AlignDevicesHook) and h.offload), None)


def is_offloaded(module: nn.Module) -> bool:
    """Whether some tensors of `module` (or of its submodules) are offloaded by accelerate (held on the meta device
    and read from elsewhere at forward time)."""
    return any(_offloading_hook(submodule) is not None for submodule in module.modules())


def execution_device(module: nn.Module) -> torch.device:
    """Where `module` computes: the execution device of its accelerate hooks, else the device of its tensors."""
    for submodule in module.modules():
        hook = getattr(submodule, "_hf_hook", None)
        for h in hook.hooks if isinstance(hook, SequentialHook) else [hook]:
            if isinstance(h, AlignDevicesHook) and h.execution_device is not None:
                return torch.device(h.execution_device)
    tensor = next((t for t in [*module.parameters(), *module.buffers()] if not t.is_meta), None)
    return tensor.device if tensor is not None else torch.device("cpu")


@contextlib.contextmanager
def materialized(module: nn.Module) -> Iterator[nn.Module]:
    """Hold every offloaded tensor of `module` in memory, on its execution device, for the duration of the context.

    Forward calls inside the context neither reload nor drop the tensors. On exit, the tensors of the submodules that
    were offloaded are dropped again (modules replaced inside the context, e.g. by their packed versions, are no
    longer part of `module` and stay as they are). A module without offloaded tensors is left alone.
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


class PackedLayerStore:
    """Packed modules of quantized decoder layers, written to one safetensors file per layer in `folder` and read
    back at forward time (accelerate offload hooks), so that a quantized model needs no memory for its layers.

    Args:
        folder (`str` or `os.PathLike`):
            An existing folder; files are written atomically as `layer-<index>.safetensors`.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)

    def path(self, index: int) -> Path:
        """The file of decoder layer `index`."""
        return self.folder / f"layer-{index:05d}.safetensors"

    def remove(self) -> None:
        """Delete the layer files (and the folder, when nothing else is left in it)."""
        for path in self.folder.glob("layer-*.safetensors"):
            path.unlink()
        if self.folder.is_dir() and not any(self.folder.iterdir()):
            self.folder.rmdir()

    def offload(self, index: int, modules: Mapping[str, nn.Module], device: torch.device | str) -> None:
        """Write the tensors of `modules` (`{name inside the layer: packed module}`, all of layer `index`) to the
        layer's file, then drop them from memory and hook each module to read them back when it runs on `device`."""
        tensors = {
            f"{name}.{key}": tensor.detach().to("cpu").contiguous()
            for name, module in modules.items()
            for key, tensor in module.state_dict().items()
        }
        path = self.path(index)
        with atomic_file(path) as staging:
            save_file(tensors, str(staging))
        self.attach(index, modules, device)

    def attach(self, index: int, modules: Mapping[str, nn.Module], device: torch.device | str) -> None:
        """Hook `modules` of layer `index` to the tensors in the layer's file; their own tensors are dropped."""
        path = str(self.path(index))
        index_map = {}
        for name, module in modules.items():
            for key, tensor in module.state_dict().items():
                dtype = str(tensor.dtype).removeprefix("torch.")
                index_map[f"{name}.{key}"] = {"safetensors_file": path, "weight_name": f"{name}.{key}", "dtype": dtype}
        loader = OffloadedWeightsLoader(index=index_map)
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
