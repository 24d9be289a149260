"""`LayerwiseSlicingHfQuantizer`: the transformers hooks of slicing, kept thin (the work is in slice.py and
layers.py)."""

from __future__ import annotations

from transformers.quantizers.base import HfQuantizer

from ..model.layers import decoder_layers
from ..slicing.architecture import check_sliceable
from ..slicing.layers import rebuild_sliced_shapes
from .compress import slice_model
from .lazy_registration import register_deferred
from .memory import check_memory


class LayerwiseSlicingHfQuantizer(HfQuantizer):
    """Slice on load (score, rotate, slice layer by layer) or load a saved sliced checkpoint (its shapes rebuilt
    from the plan before the weights load)."""

    requires_calibration = False

    def validate_environment(self, *args, **kwargs):
        if not self.pre_quantized:
            self.quantization_config.check_sliceable_request()

    def _process_model_before_weight_loading(self, model, device_map=None, checkpoint_files=None, **kwargs):
        if not self.pre_quantized:
            check_sliceable(model)  # fail before the weights load if the architecture is not supported
            if device_map is None:  # slicing rotates the whole model in memory: refuse what cannot fit
                check_memory(model, self.quantization_config.request, checkpoint_files=checkpoint_files)
            return
        plan = self.quantization_config.plan
        if plan is None:
            raise ValueError("This checkpoint's slicing config has no plan: it was not saved by optimum-layerwise.")
        rebuild_sliced_shapes(model, decoder_layers(model), plan)

    def _process_model_after_weight_loading(self, model, **kwargs):
        if not self.pre_quantized:
            self.quantization_config = slice_model(model, self.quantization_config)
        from .hub import attach_model_card  # save_pretrained/push_to_hub: atomic, with the card and checksums

        attach_model_card(model, pre_quantized=self.pre_quantized)
        return model

    def is_serializable(self) -> bool:
        return True

    @property
    def is_trainable(self) -> bool:
        """A sliced model holds plain float tensors: it trains like any other."""
        return True


register_deferred(__name__)  # when transformers' registry first loaded from this module's imports
