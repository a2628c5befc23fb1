"""The one exception tree of amk-tune.

Every error a user can cause derives from :class:`AmkError`; its message quotes the bad
value and says what to do about it. The CLI prints ``error: <message>`` and exits 2.
"""

from __future__ import annotations


class AmkError(Exception):
    """Base of every error amk-tune raises on purpose."""


class ModelError(AmkError):
    """A model config we cannot compile (not Llama-family, unsupported field, bad shape)."""


class WeightsNotFound(ModelError):
    """The weights for a model source are not where they should be."""


class TargetError(AmkError):
    """An unknown GPU target profile, or one that does not match the live device."""


class ScheduleError(AmkError):
    """A schedule whose knobs are out of range or do not fit the model."""


class ProgramError(AmkError):
    """A program that is not a well-formed amk-program (bad JSON, wrong format or version)."""


class VmError(AmkError):
    """The reference VM could not run a program to the end."""


class VmDeadlock(VmError):
    """Every unfinished block waits on a counter that can no longer reach its value."""


class BuildError(AmkError):
    """The CUDA build failed; ``log`` holds the compiler's output."""

    def __init__(self, message: str, log: str = "") -> None:
        super().__init__(message if not log else f"{message}\n--- compiler log ---\n{log}")
        self.log = log


class OracleMismatch(AmkError):
    """A program's logits or greedy tokens disagree with HuggingFace eager."""


class ArtifactError(AmkError):
    """An exported megakernel artifact that cannot be stored, found, trusted or run."""


class ArtifactTampered(ArtifactError):
    """An artifact whose files no longer hash to what its manifest recorded."""


class ArtifactMismatch(ArtifactError):
    """A genuine artifact that does not fit what it would run with (other weights, other
    amk-tune lowering or kernel ABI)."""


class ArtifactForeign(ArtifactError):
    """Not an amk-tune artifact, a format version this tool does not read, or one built for
    another GPU architecture than the live one."""


class StudyError(AmkError):
    """A study that cannot start or go on (wrong GPU, incompatible storage, dead worker)."""


class TrialFailed(StudyError):
    """One trial failed (its kernel hung or crashed, its worker died, its build broke); the
    study records the reason and goes on."""
