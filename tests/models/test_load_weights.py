"""Loading weights into a model names every tensor either side lacks."""

import pytest
import torch

from nemo_red.models.megatron_gpt import load_weights


class _WithExtraState(torch.nn.Linear):
    """A layer with megatron-style ``_extra_state`` in its state dict."""

    def get_extra_state(self) -> dict:
        return {}

    def set_extra_state(self, state: dict) -> None:
        pass


def test_loads_converting_dtype_and_tolerates_only_missing_extra_state():
    model = _WithExtraState(2, 2).to(torch.bfloat16)
    weight, bias = torch.arange(4.0).view(2, 2), torch.tensor([0.5, -0.5])
    load_weights(model, {"weight": weight, "bias": bias})
    assert model.weight.dtype == torch.bfloat16
    assert torch.equal(model.weight.float(), weight)
    assert torch.equal(model.bias.float(), bias)


@pytest.mark.parametrize(
    ("state", "named"),
    [
        ({"weight": torch.zeros(2, 2)}, "missing ['bias']"),
        (
            {"weight": torch.zeros(2, 2), "bias": torch.zeros(2), "norm.weight": torch.ones(2)},
            "unexpected ['norm.weight']",
        ),
    ],
)
def test_a_missing_or_unexpected_tensor_is_named(state, named):
    with pytest.raises(KeyError, match=named.replace("[", r"\[").replace("]", r"\]")):
        load_weights(torch.nn.Linear(2, 2), state)
