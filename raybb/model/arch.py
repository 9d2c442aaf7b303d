"""The architecture registry: name -> (model class, config dataclass, config check).

Weights files name their architecture in the ``raybb.arch`` metadata key; files without it are
the original PLN ("pln"), so every file written before the registry existed loads unchanged, with
the same fingerprint. Names are written in files: never rename or reuse one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from raybb.model.channel_ladder import ChannelLadderConfig, ChannelLadderNetwork
from raybb.model.distributions import likelihood_class
from raybb.model.ladder import LadderConfig, LadderNetwork

__all__ = ["Architecture", "ARCHITECTURES", "DEFAULT_ARCH", "get_architecture", "register_architecture", "arch_of"]

#: what a weights file without ``raybb.arch`` is
DEFAULT_ARCH = "pln"
MAX_CHANNELS = 4096  # sanity bound on channel counts read from a file


@dataclass(frozen=True)
class Architecture:
    name: str
    model_cls: type[nn.Module]
    config_cls: type
    #: raises ValueError on field values the network cannot be built from (a file's config is
    #: untrusted input: the fingerprint is only a hash anyone can recompute)
    check: Callable[[object], None]

    def config_from_dict(self, d: dict):
        if not isinstance(d, dict):
            raise ValueError(f"{self.name} config must be a JSON object")
        cfg = self.config_cls.from_dict(d)
        self.check(cfg)
        return cfg

    def build(self, config) -> nn.Module:
        return self.model_cls(config)


ARCHITECTURES: dict[str, Architecture] = {}


def register_architecture(name: str, model_cls: type[nn.Module], config_cls: type, check: Callable) -> None:
    if name in ARCHITECTURES:
        raise RuntimeError(f"architecture {name!r} is already registered")
    ARCHITECTURES[name] = Architecture(name, model_cls, config_cls, check)


def get_architecture(name: str) -> Architecture:
    """The registered architecture; KeyError (with the known names) if there is none."""
    try:
        return ARCHITECTURES[name]
    except (KeyError, TypeError):
        raise KeyError(f"unknown architecture {name!r} (known: {sorted(ARCHITECTURES)})") from None


def arch_of(model: nn.Module) -> str:
    name = getattr(model, "arch", None)
    if name not in ARCHITECTURES or not isinstance(model, ARCHITECTURES[name].model_cls):
        raise ValueError(f"{type(model).__name__} is not a registered architecture")
    return name


def _check_channels(config, names) -> None:
    for name in names:
        v = getattr(config, name)
        if type(v) is not int or not 1 <= v <= MAX_CHANNELS:
            raise ValueError(f"bad architecture: {name}={v!r} (not an int in 1..{MAX_CHANNELS})")


def _check_positive(name: str, v) -> None:
    if type(v) not in (int, float) or not (math.isfinite(v) and v > 0):
        raise ValueError(f"bad architecture: {name}={v!r} (expected a positive number)")


def check_ladder_config(config: LadderConfig) -> None:
    _check_channels(config, ("N", "M", "F", "G"))
    if type(config.learn_scale) is not bool:
        raise ValueError(f"bad architecture: learn_scale={config.learn_scale!r}")
    _check_positive("gamma_floor", config.gamma_floor)
    likelihood_class(config.likelihood)  # ValueError("bad architecture: ...") for an unknown name


register_architecture("pln", LadderNetwork, LadderConfig, check_ladder_config)
register_architecture(ChannelLadderNetwork.arch, ChannelLadderNetwork, ChannelLadderConfig, ChannelLadderConfig.check)
