"""Rule registry: duplicates refused, opset ranges resolved like onnx's reference ops."""
import pytest

from onnxprune.errors import RuleError
from onnxprune.registry import Registry
from onnxprune.rules import Barrier, OpSpec
from onnxprune.opspecs import default_registry, register_all


def rule(*op_types, since=1, until=None, domain="", family="test"):
    return OpSpec(tuple(op_types), lambda view, port, axes: Barrier(family), domain=domain, since=since,
                  until=until, family=family)


def test_duplicate_registration_raises_rule_error_naming_both_families():
    reg = Registry()
    reg.register(rule("Foo", family="first"))
    with pytest.raises(RuleError, match="Foo.*'second'.*'first'"):
        reg.register(rule("Foo", since=5, family="second"))


def test_overlapping_ranges_are_duplicates_but_disjoint_ones_are_not():
    reg = Registry()
    reg.register(rule("Foo", since=1, until=10))
    with pytest.raises(RuleError):
        reg.register(rule("Foo", since=10))
    reg.register(rule("Foo", since=11))  # disjoint: fine
    with pytest.raises(RuleError):
        reg.register(rule("Foo", since=3, until=4))


def test_a_failed_registration_adds_nothing():
    reg = Registry()
    reg.register(rule("Bar"))
    with pytest.raises(RuleError):
        reg.register(rule("Foo", "Bar", family="late"))
    assert ("", "Foo") not in reg
    assert reg.lookup("", "Foo", 17) is None
    reg.register(rule("Foo"))  # still free
    with pytest.raises(RuleError, match="twice"):
        reg.register(rule("Baz", "Baz"))
    assert ("", "Baz") not in reg


def test_lookup_picks_the_highest_since_not_above_the_opset():
    reg = Registry()
    old, mid, new = rule("Foo", until=10, family="old"), rule("Foo", since=11, until=12, family="mid"), \
        rule("Foo", since=13, family="new")
    for spec in (new, old, mid):  # registration order must not matter
        reg.register(spec)
    assert reg.lookup("", "Foo", 1) is old
    assert reg.lookup("", "Foo", 10) is old
    assert reg.lookup("", "Foo", 11) is mid
    assert reg.lookup("", "Foo", 12) is mid
    assert reg.lookup("", "Foo", 13) is new
    assert reg.lookup("", "Foo", 99) is new


def test_until_is_respected_and_since_not_reached_means_no_rule():
    reg = Registry()
    reg.register(rule("Foo", since=5, until=9))
    assert reg.lookup("", "Foo", 4) is None
    assert reg.lookup("", "Foo", 9) is not None
    assert reg.lookup("", "Foo", 10) is None


def test_domains_are_separate_namespaces():
    reg = Registry()
    std, ms = rule("Foo", family="std"), rule("Foo", domain="com.microsoft", family="ms")
    reg.register(std)
    reg.register(ms)  # same op type, other domain: no clash
    assert reg.lookup("", "Foo", 17) is std
    assert reg.lookup(None, "Foo", 17) is std
    assert reg.lookup("com.microsoft", "Foo", 1) is ms
    assert reg.op_types() == ["Foo", "com.microsoft::Foo"]


def test_one_spec_serves_several_op_types():
    reg = Registry()
    spec = reg.register(rule("A", "B"))
    assert reg.lookup("", "A", 17) is spec and reg.lookup("", "B", 17) is spec
    assert ("", "A") in reg and ("", "C") not in reg


def test_default_registry_covers_common_ops_at_every_supported_opset():
    reg = default_registry()
    for op in ("Conv", "BatchNormalization", "Relu", "Add", "Concat", "Gemm", "Reshape", "Slice"):
        for opset in (9, 13, 17):
            assert reg.lookup("", op, opset) is not None, (op, opset)

def test_registering_the_builtin_rules_twice_clashes():
    fresh = register_all(Registry())
    assert fresh.op_types() == default_registry().op_types()
    with pytest.raises(RuleError):
        register_all(fresh)
