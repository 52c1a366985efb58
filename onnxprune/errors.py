"""One exception hierarchy: the CLI turns any OnnxPruneError into one line."""


class OnnxPruneError(Exception):
    """Base class of every error onnxprune raises on purpose."""


class InputError(OnnxPruneError):
    """The input path or file cannot be used (missing, not ONNX, truncated...)."""


class UnsupportedModelError(OnnxPruneError):
    """The model is readable but uses something onnxprune refuses to touch."""


class ShapeError(OnnxPruneError):
    """A shape needed for analysis is unknown; --input-shape usually fixes it."""


class RuleError(OnnxPruneError):
    """An operator rule is malformed, duplicated, or missing where required."""


class PlanError(OnnxPruneError):
    """A pruning plan does not fit the graph it is applied to."""


class ValidationError(OnnxPruneError):
    """The pruned model failed the checker or onnxruntime; nothing was written."""
