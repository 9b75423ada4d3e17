"""The diffusion and training options, each defined once: `PredictionType`, `VarianceType`,
`TimestepSpacing`, `BetaSchedule`, `LossWeighting`, `LrSchedule` and `TimestepSampler`.

They are `str`-valued enums, so the public API keeps taking plain strings ("epsilon") and a
member equals its string (`PredictionType.EPSILON == "epsilon"`, also as a dict key). An
option is parsed once, by `parse`, where the object that uses it is built (a `NoiseSchedule`,
a sampler, a `TrainConfig`), and stored as the member; the functions that receive it do not
check it again, they dispatch on it. Whatever is written to a file (a checkpoint's training
config, `NoiseSchedule.to_dict`) holds the plain string, `member.value`. The command line
takes its choices from `values()`.
"""

from __future__ import annotations

import enum
import re
from typing import Any, TypeVar

_Option = TypeVar("_Option", bound="Option")


class Option(str, enum.Enum):
    """Base of the option enums: a member prints as its value (as `enum.StrEnum`'s do)."""

    def __str__(self) -> str:
        return self.value

    @classmethod
    def option_name(cls) -> str:
        """The keyword argument that takes this option: PredictionType -> "prediction_type"."""
        return re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).lower()

    @classmethod
    def values(cls) -> tuple[str, ...]:
        """The allowed values as plain strings, in definition order."""
        return tuple(member.value for member in cls)

    @classmethod
    def parse(cls: type[_Option], value: Any) -> _Option:
        """The member for `value` (a member or its string); a ValueError naming the option,
        the bad value and the allowed values otherwise."""
        if isinstance(value, cls):
            return value
        try:
            return cls(value)
        except ValueError:
            raise cls.unknown(value) from None

    @classmethod
    def unknown(cls, value: Any) -> ValueError:
        """The error for a value that is not one of this option's."""
        shown = value.value if isinstance(value, enum.Enum) else value
        return ValueError(
            f"unknown {cls.option_name()} {shown!r}; expected one of {cls.values()}")


class PredictionType(Option):
    """What the model predicts: the noise eps, the clean sample x0, or v = alpha_t eps -
    sigma_t x0 (Salimans & Ho 2022)."""

    EPSILON = "epsilon"
    SAMPLE = "sample"
    V_PREDICTION = "v_prediction"


class VarianceType(Option):
    """The variance of p(x_{t-1} | x_t): the posterior variance beta tilde (fixed_small), beta
    (fixed_large), or learned between them (learned_range: the model outputs twice the
    channels, the prediction then v, as improved-diffusion's learn_sigma and diffusers)."""

    FIXED_SMALL = "fixed_small"
    FIXED_LARGE = "fixed_large"
    LEARNED_RANGE = "learned_range"

    @property
    def learned(self) -> bool:
        """Whether a model of this variance type outputs variance channels."""
        return self is VarianceType.LEARNED_RANGE


class TimestepSpacing(Option):
    """How inference timesteps are spread over the training ones (diffusers' names; see
    `tinydiff.samplers.inference_timesteps`)."""

    LEADING = "leading"
    TRAILING = "trailing"
    LINSPACE = "linspace"


class BetaSchedule(Option):
    """The named beta schedules of `NoiseSchedule` (diffusers' names)."""

    LINEAR = "linear"
    SCALED_LINEAR = "scaled_linear"
    SQUAREDCOS_CAP_V2 = "squaredcos_cap_v2"
    SIGMOID = "sigmoid"


class LossWeighting(Option):
    """The per-sample weights of L_simple: none, or Min-SNR-gamma (Hang et al. 2023; see
    `tinydiff.diffusion.min_snr_weights`)."""

    UNIFORM = "uniform"
    MIN_SNR = "min_snr"


class LrSchedule(Option):
    """The learning rate after warm-up: constant, or cosine decay to 0 at the last step."""

    CONSTANT = "constant"
    COSINE = "cosine"


class TimestepSampler(Option):
    """How training timesteps are drawn: uniformly, or by improved DDPM's importance
    sampling on the loss history (`tinydiff.timestep_sampling.LossSecondMomentResampler`)."""

    UNIFORM = "uniform"
    LOSS_SECOND_MOMENT = "loss-second-moment"
