"""One exception hierarchy; each class carries the exit code the CLI returns for it.

Exit codes (also in the README):

====  ==========================================================================
0     success (``prune``: the model is written; ``analyze``: the analysis printed)
1     bad input: the model, a data file or a path cannot be used (InputError...)
2     usage: unknown option, bad option value (UsageError, OptionError)
3     nothing to prune: a valid model with no channels to remove (NothingToPrune)
4     internal error: a rule failed, or the pruned model failed the checks (a bug)
5     --strict: the pruned model's fidelity is below --min-cosine (FidelityError); nothing written
130   interrupted by SIGINT (Ctrl-C); nothing written
143   interrupted by SIGTERM; nothing written
====  ==========================================================================
"""

EXIT_OK = 0
EXIT_BAD_INPUT = 1
EXIT_USAGE = 2
EXIT_NOTHING_TO_PRUNE = 3
EXIT_INTERNAL = 4
EXIT_FIDELITY = 5
EXIT_SIGINT = 130
EXIT_SIGTERM = 143


class OnnxPruneError(Exception):
    """Base class of every error onnxprune raises on purpose."""

    exit_code = EXIT_BAD_INPUT


class InputError(OnnxPruneError):
    """The input path or file cannot be used (missing, not ONNX, truncated, clashing paths...)."""


class UnsupportedModelError(OnnxPruneError):
    """The model is readable but uses something onnxprune refuses to touch."""


class ShapeError(OnnxPruneError):
    """A shape needed for analysis is unknown; --input-shape usually fixes it."""


class ResourceError(OnnxPruneError):
    """The run would need more memory than the limit allows."""


class UsageError(OnnxPruneError):
    """The command line itself is wrong (argparse errors)."""

    exit_code = EXIT_USAGE


class NothingToPrune(OnnxPruneError):
    """A valid model without channels to remove: no operator nodes, only constants, identities."""

    exit_code = EXIT_NOTHING_TO_PRUNE


class FidelityError(OnnxPruneError):
    """--strict: the pruned model is valid but its outputs agree less than --min-cosine asks."""

    exit_code = EXIT_FIDELITY


class InternalError(OnnxPruneError):
    """Something onnxprune got wrong; the message names what, and nothing was written."""

    exit_code = EXIT_INTERNAL


class RuleError(InternalError):
    """An operator rule is malformed, duplicated, missing where required, or raised on a node."""


class PlanError(InternalError):
    """A pruning plan does not fit the graph it is applied to."""


class OptionError(PlanError):
    """An option value is unusable (a PlanError too, so older callers still catch it)."""

    exit_code = EXIT_USAGE


class ValidationError(InternalError):
    """The pruned model failed the checker or onnxruntime; nothing was written."""


class Interrupted(BaseException):
    """SIGTERM arrived: raised from the signal handler so cleanups run (a BaseException, like
    KeyboardInterrupt, so no ``except Exception`` swallows it)."""

    exit_code = EXIT_SIGTERM
