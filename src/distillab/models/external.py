"""timm and torchvision models behind the zoo's block interface.

The wrapped network is registered once (its state_dict keys get a ``net.`` prefix); the block
list is kept outside the module tree so parameters are not registered twice. timm models are
grouped with their own ``group_matcher(coarse=True)`` (stem, stages, head); torchvision models
by their top-level children.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import torch
from safetensors import SafetensorError
from torch import nn

from distillab.errors import UserError
from distillab.models.registry import register_model


class _Group(nn.Module):
    """A view on some modules of another network: one transferable block."""

    def __init__(self, modules: list[nn.Module], tap: nn.Module) -> None:
        super().__init__()
        self.parts = nn.ModuleList(modules)
        object.__setattr__(self, "tap", tap)  # not a child: already inside ``parts``


def _common_prefix(names: list[str]) -> str:
    split = [n.split(".") for n in names]
    out = []
    for parts in zip(*split, strict=False):
        if all(p == parts[0] for p in parts):
            out.append(parts[0])
        else:
            break
    return ".".join(out)


class ExternalNet(nn.Module):
    """A timm / torchvision classifier exposing ``blocks``, ``head`` and ``tap_modules``."""

    def __init__(self, net: nn.Module, groups: list[list[str]], repeat_gray: bool = False) -> None:
        super().__init__()
        self.net = net
        self.repeat_gray = repeat_gray
        mods = dict(net.named_modules())
        built = []
        for names in groups:
            prefix = _common_prefix(names)
            tap = mods[prefix] if prefix in mods and prefix else mods[names[-1]]
            built.append(_Group([mods[n] for n in names], tap))
        object.__setattr__(self, "_groups", built)

    @property
    def blocks(self) -> list[nn.Module]:
        return self._groups[:-1]

    @property
    def head(self) -> nn.Module:
        return self._groups[-1]

    def tap_modules(self) -> list[nn.Module]:
        return [g.tap for g in self.blocks]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.repeat_gray and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.net(x)


def timm_model(name: str, num_classes: int, in_chans: int, checkpoint: str | None = None, **kw) -> ExternalNet:
    """A timm model; with ``checkpoint`` (a local .safetensors/.bin/.pth/.npz file, e.g. BiT's
    ``resnetv2_50x1_bit`` weights) its weights are loaded and the head replaced for ``num_classes``."""
    import timm
    from timm.models._manipulate import group_modules

    try:
        net = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kw)
    except RuntimeError as e:  # timm raises RuntimeError for unknown names
        raise UserError(f"model timm:{name}: {e}") from None
    if checkpoint is not None:
        _load_timm_checkpoint(net, Path(checkpoint).expanduser(), name)
    groups = group_modules(net, net.group_matcher(coarse=True))
    return ExternalNet(net, [groups[k] for k in sorted(groups)])


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a local checkpoint, read by us, never unpickling code: safetensors directly,
    anything else with ``torch.load(weights_only=True)`` (timm's own loader calls ``torch.load``
    without it in older releases that ``timm>=1.0`` still admits). A ``state_dict`` / ``model``
    wrapper (training checkpoints) is unwrapped."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(torch.is_tensor(v) for v in obj.values()):
        raise ValueError("not a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _load_timm_checkpoint(net: nn.Module, path: Path, name: str) -> None:
    """Load a local checkpoint strictly, except for the classifier (replaced when its shape differs)
    and the first conv (adapted when the channel count differs). timm's own pretrained loading is
    lenient about missing keys; a user loading BiT weights into the wrong width/depth wants an error."""
    from timm.models._manipulate import adapt_input_conv

    if not path.is_file():
        raise UserError(f"model timm:{name}: checkpoint file not found: {path}")
    try:
        if path.suffix == ".npz":  # BiT's original release format: timm's ResNetV2 reads it itself
            net.load_pretrained(str(path))  # type: ignore[operator]
            return
        sd = _read_state_dict(path)
    except (KeyError, RuntimeError, ValueError, OSError, AttributeError, EOFError, SafetensorError,
            pickle.UnpicklingError) as e:
        first_line = (str(e).splitlines() or [type(e).__name__])[0][:200]
        raise UserError(f"model timm:{name}: checkpoint {path} is unreadable or does not fit ({first_line})") from None
    own = net.state_dict()
    first = net.pretrained_cfg.get("first_conv")
    if first and f"{first}.weight" in sd and sd[f"{first}.weight"].shape[1] != own[f"{first}.weight"].shape[1]:
        sd[f"{first}.weight"] = adapt_input_conv(own[f"{first}.weight"].shape[1], sd[f"{first}.weight"])
    classifier = {k for k in own if k.startswith(str(net.pretrained_cfg.get("classifier", "\0")) + ".")}
    sd = {k: v for k, v in sd.items() if not (k in classifier and v.shape != own[k].shape)}
    bad = [k for k, v in sd.items() if k not in own or v.shape != own[k].shape]
    missing = [k for k in own if k not in sd and k not in classifier]
    if bad or missing:
        raise UserError(f"model timm:{name}: checkpoint {path} has another width or depth "
                        f"({'unexpected ' + bad[0] if bad else 'missing ' + missing[0]})")
    net.load_state_dict(sd, strict=False)


def torchvision_model(name: str, num_classes: int, in_chans: int, **kw) -> ExternalNet:
    import torchvision

    try:
        net = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kw)
    except ValueError as e:
        raise UserError(f"model torchvision:{name}: {e}") from None
    children = [n for n, m in net.named_children() if any(True for _ in m.parameters())]
    if in_chans not in (1, 3):
        raise UserError(f"model torchvision:{name}: expects 3 input channels (or 1, repeated), data has {in_chans}")
    return ExternalNet(net, [[c] for c in children], repeat_gray=in_chans == 1)


@register_model("timm", takes_arg=True)
def _timm_named(num_classes: int, in_chans: int, img_size: int, *, arg: str, **kwargs) -> ExternalNet:
    """timm:NAME — any timm model, random init (kwarg checkpoint=FILE loads local weights)."""
    return timm_model(arg, num_classes, in_chans, **kwargs)


@register_model("torchvision", takes_arg=True)
def _torchvision_named(num_classes: int, in_chans: int, img_size: int, *, arg: str, **kwargs) -> ExternalNet:
    """torchvision:NAME — any torchvision classification model, random init."""
    return torchvision_model(arg, num_classes, in_chans, **kwargs)
