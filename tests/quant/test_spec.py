"""Spec strings: parsing, canonical text, round trips and the errors for bad input."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qnnlab import quant

NON_DEFAULT = [
    "sign",
    "sign@ste",
    "sign@hardsigmoid:slope=2.0,rate=0.5",
    "sign@approxsign",
    "sign@swishsign:beta=3.0",
    "stochastic_sign",
    "stochastic_sign:law=sigmoid@reinforce:momentum=0.5",
    "stochastic_sign@gumbel:tau=0.5,hard=1",
    "ternary_stochastic",
    "ternary:factor=0.5,scaled=0",
    "dorefa:bits=3",
    "dorefa:bits=4,stochastic=1",
    "dorefa_w:bits=1",
    "int:bits=8,range=2.5",
    "uniform:bits=4,lo=-1.0",
    "fixed:m=2,n=5",
    "dfxp:bits=8,rate=0.01,group=channel",
    "pow2:min_exp=-4,max_exp=2",
    "xnor_weight:per=tensor",
    "xnor_act",
    "zipml:levels=16",
    "lloydmax:levels=4,refit=1",
    "half",
    "float",
    "grad_dorefa:bits=4",
    "grad_pow2:exponents=3",
]


@pytest.mark.parametrize("spec", NON_DEFAULT)
def test_canonical_spec_round_trips(spec):
    q = quant.get(spec)
    assert str(q) == spec
    assert quant.get(str(q)) == q


@pytest.mark.parametrize("name", sorted(quant.QUANTIZERS))
def test_every_quantizer_and_estimator_pair_round_trips(name):
    cls = quant.QUANTIZERS[name]
    for estimator in cls.estimators:
        q = quant.get(f"{name}@{estimator}")
        again = quant.get(str(q))
        assert again == q and str(again) == str(q)
        assert q.estimator.name == estimator


def test_positional_arguments_and_aliases():
    assert quant.get("dorefa:3") == quant.get("dorefa:bits=3")
    assert quant.get("fixed:2,5") == quant.get("fixed:m=2,n=5")
    assert str(quant.get("ste_sign")) == "sign"  # clipped STE is sign's default
    assert str(quant.get("approx_sign")) == "sign@approxsign"
    assert str(quant.get("bwn")) == "xnor_weight"
    assert quant.get(None) == quant.get("float")
    q = quant.get("sign")
    assert quant.get(q) is q


def test_available_lists_every_registered_name():
    names = quant.available()
    for expected in (
        "sign",
        "stochastic_sign",
        "ternary",
        "dorefa",
        "fixed",
        "dfxp",
        "pow2",
        "xnor_weight",
        "zipml",
        "lloydmax",
        "uniform",
        "half",
        "float",
        "ste_sign",
        "grad_dorefa",
    ):
        assert expected in names
    assert set(quant.available_estimators()) == {
        "ste",
        "clipped",
        "hardsigmoid",
        "approxsign",
        "swishsign",
        "reinforce",
        "gumbel",
    }


@given(bits=st.integers(1, 16), stochastic=st.booleans())
def test_dorefa_round_trip_property(bits, stochastic):
    q = quant.get(f"dorefa:bits={bits},stochastic={int(stochastic)}")
    assert quant.get(str(q)) == q and q.bits == bits and q.stochastic == stochastic


@settings(max_examples=50)
@given(factor=st.floats(0.0, 10.0, allow_nan=False), lo=st.floats(-1e6, 1e6), width=st.floats(1e-3, 1e6))
def test_float_arguments_round_trip_exactly(factor, lo, width):
    assert quant.get(str(quant.get(f"ternary:factor={factor!r}"))).factor == factor
    q = quant.get(f"uniform:lo={lo!r},hi={lo + width!r}")
    assert quant.get(str(q)) == q


@pytest.mark.parametrize(
    "spec, words",
    [
        ("nosuch", "unknown quantizer 'nosuch'"),
        ("", "non-empty string"),
        ("sign:", "empty argument"),
        ("dorefa:bits=", "must be an integer"),
        ("dorefa:bits=two", "must be an integer"),
        ("dorefa:2,0,7", "too many arguments"),
        ("dorefa:17", "out of range"),
        ("int:1", "out of range"),
        ("dfxp:rate=0.9", "out of range"),
        ("fixed:m=20,n=20", "at most 32"),
        ("uniform:lo=1,hi=0", "must be below"),
        ("pow2:min_exp=3,max_exp=1", "must not exceed"),
        ("dfxp:group=row", "not one of"),
        ("dorefa:width=2", "unknown argument 'width'"),
        ("dorefa:bits=2,bits=3", "given twice"),
        ("dorefa:bits=2,3", "positional argument"),
        ("sign@@ste", "more than one '@'"),
        ("sign@nosuch", "unknown estimator 'nosuch'"),
        ("sign@gumbel", "does not fit"),
        ("dorefa@approxsign", "does not fit"),
        ("sign@hardsigmoid:slope=0", "must be > 0"),
        ("ternary:factor=nan", "finite number"),
        ("si gn", "is not a name"),
    ],
)
def test_bad_specs_raise_one_clear_value_error(spec, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(")) as info:
        quant.get(spec)
    assert "Traceback" not in str(info.value)


def test_error_for_unknown_name_lists_accepted_forms():
    with pytest.raises(ValueError) as info:
        quant.get("binary")
    assert "sign" in str(info.value) and "dorefa" in str(info.value)
