"""The alignment losses by name, each with its options: the one place where a loss, or a loss option, is added.

An `AlignmentLoss` pairs a loss function of `diffusers_tsa.losses` with the dataclass of its options (a `LossOptions`
subclass). Each option is a `loss_option` field, which declares its default, its check, its help text and its
command-line flag; from these come the training config (`AlignmentConfig.options`), the flags and the flag names of
errors (`diffusers_tsa.cli`), the model card, and the checks of precomputed teacher targets. A new loss is one entry:

    @dataclass(frozen=True)
    class HingeOptions(LossOptions):
        hinge_margin: float = loss_option(
            0.1,
            flag="--hinge_margin",
            argument="margin",
            check=(lambda m: m >= 0, "must be >= 0"),
            help="Relation differences below this are not penalised",
        )


    register_alignment_loss(AlignmentLoss("hinge", hinge_loss, HingeOptions, "relations with a margin"))

after which `--alignment_loss hinge --hinge_margin 0.2` trains with `hinge_loss(student, teacher, margin=0.2)`, and
`AlignmentConfig(loss="hinge", options=HingeOptions(hinge_margin=0.2), ...)` is the same in Python.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from .errors import UsageError


if TYPE_CHECKING:
    import torch


Check = tuple[Callable[[Any], bool], str]
_METADATA_KEY = "loss_option"


def loss_option(
    default: Any,
    *,
    flag: str,
    help: str,
    check: Check | None = None,
    argument: str | None = None,
    aliases: tuple[str, ...] = (),
    targets: bool = False,
) -> Any:
    """A field of a `LossOptions` dataclass: one option of an alignment loss.

    Args:
        default (`Any`): the value when none is given; its field's type (`float`, `int`, `bool`) is the flag's type.
        flag (`str`): the command-line flag that sets it, e.g. `"--tsa_temperature"`.
        help (`str`): what it does, for the flag's help (which adds the default).
        check (`tuple[Callable, str]`, *optional*): a predicate the value must satisfy and what it requires, e.g.
            `(lambda tau: tau > 0, "must be positive")`.
        argument (`str`, *optional*): the loss function's keyword it is passed as (default: the field's name).
        aliases (`tuple[str, ...]`, defaults to `()`): other flags that set it.
        targets (`bool`, defaults to `False`): the option shapes the teacher targets (M-TSA's mask ratio), not the
            loss function: it is not passed to the loss, is recorded with precomputed targets and checked against
            them.
    """
    metadata = {
        "flag": flag,
        "help": help,
        "check": check,
        "argument": argument,
        "aliases": aliases,
        "targets": targets,
    }
    return dataclasses.field(default=default, metadata={_METADATA_KEY: metadata})


@dataclass(frozen=True)
class LossOption:
    """One option of an alignment loss, as its `loss_option` field declares it (see `loss_option` for the fields).

    Args:
        name (`str`): the field's name, as library errors and `AlignmentConfig.options` spell it.
        type (`type`): the field's type.
        default (`Any`): its default.
        flag (`str`): the flag that sets it.
        help (`str`): what it does.
        check (`tuple[Callable, str]`, *optional*): its predicate and requirement.
        argument (`str`): the loss function's keyword it is passed as.
        aliases (`tuple[str, ...]`): other flags that set it.
        targets (`bool`): whether it shapes the teacher targets rather than the loss function.
    """

    name: str
    type: type
    default: Any
    flag: str
    help: str
    check: Check | None
    argument: str
    aliases: tuple[str, ...]
    targets: bool

    @property
    def dest(self) -> str:
        """The attribute of the parsed flags (`argparse.Namespace`) that holds the value of `flag`."""
        return self.flag.removeprefix("--").replace("-", "_")

    def problem(self, value: Any) -> str | None:
        """What is wrong with `value` (`` "`name=value` must be ..." ``), or `None` when it passes the check."""
        if self.check is None or self.check[0](value):
            return None
        return f"`{self.name}={value}` {self.check[1]}"


@dataclass(frozen=True)
class LossOptions:
    """Base of the options dataclasses of alignment losses: each `loss_option` field is checked on construction.

    Raises:
        `UsageError`: naming each option whose value fails its check.
    """

    def __post_init__(self):
        bad = [p for option in options_of(type(self)) if (p := option.problem(getattr(self, option.name)))]
        if bad:
            raise UsageError("Invalid alignment loss options: " + "; ".join(bad) + ".")


@functools.cache
def options_of(options: type[LossOptions]) -> tuple[LossOption, ...]:
    """The options an options dataclass declares, in field order (inherited fields first).

    Raises:
        `UsageError`: for a field not made with `loss_option`.
    """
    types = typing.get_type_hints(options)
    declared = []
    for field in dataclasses.fields(options):
        if _METADATA_KEY not in field.metadata:
            raise UsageError(f"`{options.__name__}.{field.name}` must be declared with `loss_option(...)`.")
        metadata = dict(field.metadata[_METADATA_KEY])
        metadata["argument"] = metadata["argument"] or field.name
        declared.append(LossOption(name=field.name, type=types[field.name], default=field.default, **metadata))
    return tuple(declared)


def check_option(option: LossOption, value: Any) -> None:
    """Raises `UsageError` when `value` fails `option`'s check (for settings that take one option alone, e.g. the
    mask ratio of `TeacherFeatures`)."""
    problem = option.problem(value)
    if problem:
        raise UsageError(problem + ".")


@dataclass(frozen=True)
class AlignmentLoss:
    """An alignment loss as training calls it: `function(student, teacher, **options)`.

    Args:
        name (`str`): what `AlignmentConfig.loss` and `--alignment_loss` call it.
        function (`Callable[..., torch.Tensor]` or `str`): the loss of projected student features and teacher
            features, both `(B, F, H, W, C)`, taking each option (but those of the targets) as its keyword
            `argument`; or its import path, `"module:name"`, imported on the first call (so that the registry, and
            the flags made from it, need no torch).
        options (`type[LossOptions]`): the dataclass of its options; an empty one for a loss with none.
        description (`str`): a few words for the help of `--alignment_loss`.
        masked (`bool`, defaults to `False`): the loss takes M-TSA's motion-saliency queries, as `function`'s
            `query_mask`; its options then have the `mask_ratio` they are computed with.
    """

    name: str
    function: Callable[..., torch.Tensor] | str
    options: type[LossOptions]
    description: str
    masked: bool = False

    def __call__(
        self,
        student: torch.Tensor,
        teacher: torch.Tensor,
        options: LossOptions | None = None,
        *,
        motion_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The loss of projected student features `(B, F, H, W, C)` against teacher features `(B, F, H, W, C)`.

        Args:
            student (`torch.Tensor`): `(B, F, H, W, C)` projected diffusion features.
            teacher (`torch.Tensor`): `(B, F, H, W, C)` teacher features.
            options (`LossOptions`, *optional*): an instance of `self.options`; `None` takes its defaults.
            motion_mask (`torch.Tensor`, *optional*): `(B, F, H, W)` bool queries, required by a `masked` loss and
                ignored by the others.
        """
        options = self.options() if options is None else options
        if type(options) is not self.options:
            raise UsageError(
                f"`loss={self.name!r}` takes `{self.options.__name__}` options, got `options={options!r}`."
            )
        arguments = {o.argument: getattr(options, o.name) for o in options_of(self.options) if not o.targets}
        if self.masked:
            if motion_mask is None:
                raise UsageError(f"`loss={self.name!r}` needs motion masks (`motion_mask`).")
            arguments["query_mask"] = motion_mask
        function = self.function
        if isinstance(function, str):
            module, _, name = function.partition(":")
            function = getattr(importlib.import_module(module), name)
        return function(student, teacher, **arguments)


#: Alignment loss name -> its entry, in registration order; `register_alignment_loss` adds to it.
ALIGNMENT_LOSSES: dict[str, AlignmentLoss] = {}


def register_alignment_loss(loss: AlignmentLoss) -> AlignmentLoss:
    """Adds `loss` to `ALIGNMENT_LOSSES`; returns it.

    Option names and flags are shared by all losses (one flag table): an option of two losses (the temperature of
    TSA and M-TSA) is one field, inherited; any other option needs a name and a flag of its own (prefix them with the
    loss's name).

    Raises:
        `UsageError`: for a name already registered, options that are not a `LossOptions` dataclass of
            `loss_option` fields, an option declared differently by another loss or a flag taken by another option,
            a `bool` option that defaults to `True` (its flag can only turn it on), or a `masked` loss without
            `mask_ratio`.
    """
    if loss.name in ALIGNMENT_LOSSES:
        raise UsageError(f"`name={loss.name!r}` is already an alignment loss; unregister it first.")
    if not (dataclasses.is_dataclass(loss.options) and issubclass(loss.options, LossOptions)):
        raise UsageError(f"`options={loss.options!r}` of loss {loss.name!r} must be a `LossOptions` dataclass.")
    known = registered_options()
    flags = {flag: o.name for o in known.values() for flag in (o.flag, *o.aliases)}
    declared = options_of(loss.options)
    for option in declared:
        if option.name in known and known[option.name] != option:
            raise UsageError(
                f"Option `{option.name}` of loss {loss.name!r} is declared differently by another loss; share it by "
                "inheriting its field, or give it another name."
            )
        taken = [flag for flag in (option.flag, *option.aliases) if flags.get(flag, option.name) != option.name]
        if taken:
            raise UsageError(f"Option `{option.name}` of loss {loss.name!r}: flag {taken[0]} is another option's.")
        if option.type is bool and option.default is not False:
            raise UsageError(f"Option `{option.name}` of loss {loss.name!r} is a bool: it must default to `False`.")
    if loss.masked and "mask_ratio" not in {o.name for o in declared}:
        raise UsageError(f"Loss {loss.name!r} is `masked`: its options need the `mask_ratio` of its motion masks.")
    ALIGNMENT_LOSSES[loss.name] = loss
    return loss


def unregister_alignment_loss(name: str) -> AlignmentLoss:
    """Removes the loss `name` from `ALIGNMENT_LOSSES`; returns its entry."""
    if name not in ALIGNMENT_LOSSES:
        raise UsageError(f"`name={name!r}` is not an alignment loss; choose one of {tuple(ALIGNMENT_LOSSES)}.")
    return ALIGNMENT_LOSSES.pop(name)


def get_alignment_loss(name: str) -> AlignmentLoss:
    """The registered loss `name`.

    Raises:
        `UsageError`: when no loss of that name is registered.
    """
    if name not in ALIGNMENT_LOSSES:
        raise UsageError(f"`loss={name!r}` is not an alignment loss; choose one of {tuple(ALIGNMENT_LOSSES)}.")
    return ALIGNMENT_LOSSES[name]


def registered_options() -> dict[str, LossOption]:
    """Every option of every registered loss, and of the weight schedule every loss takes (`WeightSchedule`), by
    name; an option shared by several losses once."""
    options = {option.name: option for loss in ALIGNMENT_LOSSES.values() for option in options_of(loss.options)}
    return {**options, **{option.name: option for option in options_of(WeightSchedule)}}


def target_options(options: LossOptions) -> dict[str, Any]:
    """The values of the options that shape the teacher targets (`loss_option(targets=True)`), by name: what
    precomputed targets record and must match."""
    return {o.name: getattr(options, o.name) for o in options_of(type(options)) if o.targets}


# --- The weight schedule, one option set for every loss ------------------------------------------------------------

#: `WeightSchedule.weight_schedule` values: how lambda goes from `AlignmentConfig.weight` to `weight_end`.
WEIGHT_SCHEDULES = ("constant", "linear", "cosine", "polynomial")
#: `WeightSchedule.weight_threshold_action` values: what happens once the alignment loss's EMA reaches the threshold.
THRESHOLD_ACTIONS = ("off", "stop", "decay")


@dataclass(frozen=True)
class WeightSchedule(LossOptions):
    """How lambda of Eq. 14 changes over training, for any alignment loss (`diffusers_tsa.AlignmentWeight` runs it).

    Steps are optimizer steps, counted from 1. The weight ramps linearly over the first `weight_warmup_steps`
    (`base * n / warmup` at step n), then stays at the base weight (`constant`) or goes to `weight_end` over
    `weight_decay_steps` (`linear`, `cosine`, or `polynomial` of `weight_power`); after `weight_cutoff_step` it is 0.
    With a `weight_threshold_action`, an exponential moving average (decay `weight_ema_decay`) of each step's
    alignment loss is kept; once it falls to `weight_threshold` or below (the losses are lower when aligned; REPA's
    and CREPA's are minus a cosine similarity, so -0.9 is SimpleTuner's `crepa_similarity_threshold` 0.9), the
    weight is 0 from the next step on (`stop`), or decays from where it is to `weight_end` over
    `weight_decay_steps` (`decay`, with the schedule's shape, linear for `constant`).

    Args:
        weight_warmup_steps (`int`, defaults to 0): steps of the linear warm-up.
        weight_schedule (`str`, defaults to `"constant"`): one of `WEIGHT_SCHEDULES`.
        weight_end (`float`, defaults to 0.0): the weight a decay ends at.
        weight_decay_steps (`int`, defaults to 0): steps of the decay after the warm-up; 0 decays until the last step.
        weight_power (`float`, defaults to 1.0): the power of the `polynomial` decay.
        weight_cutoff_step (`int`, defaults to 0): the last step with a non-zero weight; 0 never cuts off.
        weight_threshold_action (`str`, defaults to `"off"`): one of `THRESHOLD_ACTIONS`.
        weight_threshold (`float`, defaults to 0.0): the EMA of the alignment loss that triggers the action.
        weight_ema_decay (`float`, defaults to 0.99): the EMA's decay (0.99: about the last 100 steps).
    """

    weight_warmup_steps: int = loss_option(
        0,
        flag="--alignment_weight_warmup_steps",
        check=(lambda n: n >= 0, "must be >= 0"),
        help="Ramp the alignment weight linearly from 0 over this many steps",
    )
    weight_schedule: str = loss_option(
        "constant",
        flag="--alignment_weight_schedule",
        check=(lambda s: s in WEIGHT_SCHEDULES, f"must be one of {WEIGHT_SCHEDULES}"),
        help=f"After the warm-up, keep the alignment weight or decay it to --alignment_weight_end: {WEIGHT_SCHEDULES}",
    )
    weight_end: float = loss_option(
        0.0,
        flag="--alignment_weight_end",
        check=(lambda w: w >= 0, "must be >= 0"),
        help="The alignment weight a decay ends at",
    )
    weight_decay_steps: int = loss_option(
        0,
        flag="--alignment_weight_decay_steps",
        check=(lambda n: n >= 0, "must be >= 0"),
        help="Steps of the decay after the warm-up (or after the threshold, for its 'decay'); 0: until the last step",
    )
    weight_power: float = loss_option(
        1.0,
        flag="--alignment_weight_power",
        check=(lambda p: p > 0, "must be positive"),
        help="Power of the 'polynomial' decay (1: linear)",
    )
    weight_cutoff_step: int = loss_option(
        0,
        flag="--alignment_weight_cutoff_step",
        check=(lambda n: n >= 0, "must be >= 0"),
        help="The alignment weight is 0 after this step; 0 never cuts it off",
    )
    weight_threshold_action: str = loss_option(
        "off",
        flag="--alignment_weight_threshold_action",
        check=(lambda a: a in THRESHOLD_ACTIONS, f"must be one of {THRESHOLD_ACTIONS}"),
        help="Once the EMA of the alignment loss falls to --alignment_weight_threshold: 'stop' the term, or 'decay' it "
        "over --alignment_weight_decay_steps; 'off' keeps no EMA",
    )
    weight_threshold: float = loss_option(
        0.0,
        flag="--alignment_weight_threshold",
        help="The EMA of the alignment loss at or below which --alignment_weight_threshold_action acts (REPA/CREPA "
        "losses are minus a cosine similarity: -0.9 is a similarity of 0.9)",
    )
    weight_ema_decay: float = loss_option(
        0.99,
        flag="--alignment_weight_ema_decay",
        check=(lambda d: 0 <= d < 1, "must be in [0, 1)"),
        help="Decay of the EMA of the alignment loss (0.99: about the last 100 steps)",
    )

    def __post_init__(self):
        super().__post_init__()
        if self.weight_threshold_action == "decay" and self.weight_decay_steps == 0:
            raise UsageError(
                "Invalid alignment loss options: `weight_threshold_action='decay'` needs the steps it decays over "
                "(`weight_decay_steps` > 0)."
            )


# --- The losses of the paper and its baselines --------------------------------------------------------------------


@dataclass(frozen=True)
class TSAOptions(LossOptions):
    """Options of TSA (`tsa_loss` with every token a query).

    Args:
        temperature (`float`, defaults to 0.1): tau of Eq. 8 (`--tsa_temperature`).
    """

    temperature: float = loss_option(
        0.1,
        flag="--tsa_temperature",
        argument="tau",
        check=(lambda tau: tau > 0, "must be positive"),
        help="Softmax temperature tau of TSA and M-TSA; lower sharpens correspondences, the paper found 0.1 best",
    )


@dataclass(frozen=True)
class MTSAOptions(TSAOptions):
    """Options of M-TSA (`tsa_loss` on motion-saliency queries, Eq. 13): TSA's, and the share of queries.

    Args:
        temperature (`float`, defaults to 0.1): tau of Eq. 8 (`--tsa_temperature`).
        mask_ratio (`float`, defaults to 0.2): share `k` of the most dynamic tokens per frame used as queries
            (Eq. 12; `--tsa_mask_ratio`), recorded with precomputed motion masks.
    """

    mask_ratio: float = loss_option(
        0.2,
        flag="--tsa_mask_ratio",
        aliases=("--mask_ratio",),
        targets=True,
        check=(lambda k: 0 < k <= 1, "must be in (0, 1]"),
        help="Share k of the most dynamic tokens per frame used as M-TSA queries",
    )


@dataclass(frozen=True)
class NoOptions(LossOptions):
    """The options of a loss that has none (TRD, REPA)."""


@dataclass(frozen=True)
class CREPAOptions(LossOptions):
    """Options of CREPA (`crepa_loss`), with SimpleTuner's names.

    Args:
        crepa_adjacent_distance (`int`, defaults to 1): the neighbour distance D; 0 is per-frame REPA.
        crepa_temporal_decay (`float`, defaults to 1.0): tau; a neighbour at distance d weighs e^(-d / tau).
        crepa_cumulative_neighbors (`bool`, defaults to `False`): every distance 1..D, not D alone.
    """

    crepa_adjacent_distance: int = loss_option(
        1,
        flag="--crepa_adjacent_distance",
        argument="adjacent_distance",
        check=(lambda d: d >= 0, "must be >= 0"),
        help="CREPA: align each frame with the teacher's frames at this distance too; 0 is per-frame REPA",
    )
    crepa_temporal_decay: float = loss_option(
        1.0,
        flag="--crepa_temporal_decay",
        argument="temporal_decay",
        check=(lambda tau: tau > 0, "must be positive"),
        help="CREPA: a neighbour at distance d weighs exp(-d / this)",
    )
    crepa_cumulative_neighbors: bool = loss_option(
        False,
        flag="--crepa_cumulative_neighbors",
        argument="cumulative_neighbors",
        help="CREPA: use every distance 1..D (D: --crepa_adjacent_distance), not that distance alone",
    )


register_alignment_loss(
    AlignmentLoss(
        "m-tsa", "diffusers_tsa.losses:tsa_loss", MTSAOptions, "the paper's TSA on motion-salient queries", masked=True
    )
)
register_alignment_loss(AlignmentLoss("tsa", "diffusers_tsa.losses:tsa_loss", TSAOptions, "every token a query"))
register_alignment_loss(
    AlignmentLoss(
        "trd", "diffusers_tsa.losses:trd_loss", NoOptions, "VideoREPA's token relation distillation, a baseline"
    )
)
register_alignment_loss(AlignmentLoss("repa", "diffusers_tsa.losses:repa_loss", NoOptions, "REPA, a baseline"))
register_alignment_loss(
    AlignmentLoss("crepa", "diffusers_tsa.losses:crepa_loss", CREPAOptions, "cross-frame REPA, a baseline")
)
