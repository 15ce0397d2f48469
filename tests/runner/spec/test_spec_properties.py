"""Property tests of the duration parser and the spec loader: whatever a person writes, no traceback.

Thousands of generated inputs: duration strings and numbers, random YAML documents, and mutations
of examples/digits.yaml (a field replaced by a random value, a key added or removed, the text cut
or spliced with YAML syntax). The loader runs the way `spotrun submit` runs it, in-process through
the Typer app, so what is checked is what a user sees: exit 0, or exit 2 with one ``error:`` line.
"""

from __future__ import annotations

import json
import math
import string
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from checkpoints.durations import MAX_DURATION_S, DurationError, parse_duration
from runner.cli.app import app
from runner.errors import SpecError
from runner.spec.job_spec import load_spec

REPO = Path(__file__).resolve().parents[3]
DIGITS_SPEC = yaml.safe_load((REPO / "examples" / "digits.yaml").read_text())
DIGITS_SPEC["train"]["model"] = f"{REPO}/examples/digits.py:DigitsClassifier"  # the spec file is written elsewhere
DIGITS_SPEC["train"]["data"] = f"{REPO}/examples/digits.py:DigitsData"
DIGITS_TEXT = yaml.safe_dump(DIGITS_SPEC, sort_keys=False)

# No deadline (the first example imports lightning), no example database written into the repository.
FAST: dict[str, Any] = {
    "deadline": None,
    "database": None,
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
}

# ------------------------------------------------------------------ durations

UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
NUMBERS = st.one_of(
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=0, max_value=10**9),
)
DURATION_TEXT = st.one_of(
    st.text(max_size=30),
    st.builds(
        lambda number, space, unit: f"{number}{space}{unit}",
        NUMBERS,
        st.sampled_from(["", " ", "\t"]),
        st.sampled_from([*UNITS, "", "x", "min"]),
    ),
)


@given(value=st.one_of(DURATION_TEXT, NUMBERS, st.booleans(), st.none()))
@settings(max_examples=2000, **FAST)
def test_a_duration_is_finite_seconds_in_range_or_one_clear_error(value: Any) -> None:
    try:
        seconds = parse_duration(value)
    except DurationError as error:
        assert isinstance(error, ValueError) and "\n" not in str(error) and error.expected.startswith("expected ")
        return
    assert isinstance(seconds, float) and math.isfinite(seconds) and 0.0 <= seconds <= MAX_DURATION_S
    if isinstance(value, str):
        assert value.strip()[-1:].isalpha() or seconds == 0.0  # text without a unit is only ever zero


@given(number=st.integers(min_value=0, max_value=10**6), unit=st.sampled_from(sorted(UNITS)), fraction=st.sampled_from(["", ".5", ".25"]))
@settings(max_examples=300, **FAST)
def test_a_duration_with_its_unit_means_what_it_says(number: int, unit: str, fraction: str) -> None:
    expected = float(f"{number}{fraction}") * UNITS[unit]
    text = f"{number}{fraction}{unit}"
    if expected > MAX_DURATION_S:
        with pytest.raises(DurationError, match="at most 3650d"):
            parse_duration(text)
    else:
        assert parse_duration(text) == expected


# ---------------------------------------------------------------- the spec loader

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(string.printable + "\x00\x07\u00e9\u2028", max_size=20),
    st.builds(
        lambda number, unit: f"{number}{unit}", st.integers(min_value=0, max_value=10**13), st.sampled_from(["", "s", "m", "h", "d", "ms"])
    ),
    st.datetimes(timezones=st.none() | st.timezones()),
    st.dates(),
    st.sampled_from(["examples/digits.py:DigitsClassifier", "s3://", "file:///", "~nobody/x.py:M", "on-demand", "auto", "aws", "0", "-1"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8) | st.integers(), inner, max_size=4),
    max_leaves=12,
)
SPEC_KEYS = st.sampled_from(
    ["name", "team", "tags", "train", "checkpoint", "resources", "budget", "local", "every", "deadline", "max_usd", "nodes", "model"]
)
DOCUMENTS = st.one_of(VALUES, st.dictionaries(SPEC_KEYS | st.text(max_size=6), VALUES, max_size=6))


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path in a spec, sections and leaves alike."""
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


DIGITS_PATHS = _paths(DIGITS_SPEC)


@st.composite
def mutated_digits(draw: st.DrawFn) -> dict[str, Any]:
    """examples/digits.yaml with one to three fields replaced by random values, added, or removed."""
    spec = yaml.safe_load(DIGITS_TEXT)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        *parents, leaf = draw(st.sampled_from(DIGITS_PATHS))
        node = spec
        for parent in parents:
            node = node[parent] if isinstance(node, (dict, list)) and _has(node, parent) else None
        if not isinstance(node, (dict, list)) or not _has(node, leaf):
            continue
        action = draw(st.sampled_from(["replace", "replace", "replace", "remove", "add"]))
        if action == "replace":
            node[leaf] = draw(VALUES)
        elif action == "remove" and isinstance(node, dict):
            del node[leaf]
        elif isinstance(node[leaf], dict):
            node[leaf][draw(SPEC_KEYS | st.text(max_size=6))] = draw(VALUES)
    return spec


def _has(node: dict[Any, Any] | list[Any], key: Any) -> bool:
    return key in node if isinstance(node, dict) else isinstance(key, int) and key < len(node)


SPLICES = st.sampled_from(
    [
        "&a ",
        "*a",
        "*b",
        "<<: *a\n",
        "!!binary ",
        "!!python/object/apply:os.system ['true']",
        "!!set ",
        "!!timestamp ",
        "[",
        "]",
        "{",
        "}",
        ": ",
        "\n- ",
        "\t",
        "'",
        '"',
        "%YAML 1.1\n",
        "\n---\n",
        "\n...\n",
        "? ",
        "#",
        "\\0",
        "\x00",
        "\ufeff",
        "9" * 5000,
        ".nan",
        ".inf",
        "-.inf",
        "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n",
        "[" * 200,
        "2030-13-45T00:00:00Z",
        "0x" + "f" * 40,
        "1_000",
        "0o777",
        "~",
        "null",
        "yes",
    ]
)


VALUE_SPLICES = st.sampled_from(
    [
        "9" * 5000,
        "2030-13-45T00:00:00Z",
        "2001-12-14 21:59:43.10 +04:27:53",
        ".nan",
        ".inf",
        "99999999999d",
        "5",
        "-1",
        "!!binary /w==",
        "!!set {a: null}",
        "*undefined",
        "&x [*x]",
        "[" * 100 + "]" * 100,
        '"\\x85"',
        '"\\0"',
        "0x" + "f" * 40,
        "1e400",
        "~",
        "[]",
        "{}",
    ]
)


@st.composite
def spliced_text(draw: st.DrawFn) -> str:
    """The spec's text with YAML syntax spliced in, a slice cut out, or a line's value replaced, at random places."""
    text = DIGITS_TEXT
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        action = draw(st.sampled_from(["insert", "cut", "value"]))
        if action == "value":  # a leaf's value: the document still parses, what it holds is the test
            lines = text.splitlines()
            leaves = [index for index, line in enumerate(lines) if ": " in line]
            index = draw(st.sampled_from(leaves))
            key, _, _ = lines[index].partition(": ")
            lines[index] = f"{key}: {draw(VALUE_SPLICES)}"
            text = "\n".join(lines) + "\n"
            continue
        at = draw(st.integers(min_value=0, max_value=len(text)))
        if action == "insert":
            text = text[:at] + draw(SPLICES) + text[at:]
        else:
            text = text[:at] + text[at + draw(st.integers(min_value=1, max_value=40)) :]
    return text


@pytest.fixture(scope="module", autouse=True)
def _lightning_imported() -> None:
    """The loader imports lightning for the first model it checks (seconds): once, before any example is timed."""
    import lightning.pytorch  # noqa: F401


@pytest.fixture
def spec_file(tmp_path: Path, spotrun_home: Path) -> Path:
    return tmp_path / "job.yaml"


def _write(path: Path, document: Any) -> None:
    path.write_text(document if isinstance(document, str) else yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")


def _submit_is_clean(spec_file: Path) -> None:
    """`spotrun submit` either records the job (exit 0) or refuses it (exit 2) with one error line; nothing else."""
    result = CliRunner().invoke(app, ["submit", str(spec_file)])
    assert result.exit_code in (0, 2) and isinstance(result.exception, (SystemExit, type(None))), (result.exception, result.output)
    assert "Traceback" not in result.output
    if result.exit_code == 2:
        errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and result.stderr.rstrip("\n").splitlines()[-1] == errors[0], result.stderr


@pytest.mark.slow  # 150 specs through `spotrun submit`
@given(document=DOCUMENTS)
@settings(max_examples=150, **FAST)
def test_random_yaml_documents_through_submit(spec_file: Path, document: Any) -> None:
    _write(spec_file, document)
    _submit_is_clean(spec_file)


@pytest.mark.slow  # 120 specs through `spotrun submit`
@given(spec=mutated_digits())
@settings(max_examples=120, **FAST)
def test_mutations_of_the_demo_spec_through_submit(spec_file: Path, spec: dict[str, Any]) -> None:
    _write(spec_file, spec)
    _submit_is_clean(spec_file)


@given(text=spliced_text())
@settings(max_examples=150, **FAST)
def test_the_demo_spec_with_yaml_syntax_spliced_in_through_submit(spec_file: Path, text: str) -> None:
    _write(spec_file, text)
    _submit_is_clean(spec_file)


@pytest.mark.slow  # 250 specs through the loader
@given(spec=mutated_digits())
@settings(max_examples=250, **FAST)
def test_the_loader_gives_a_spec_that_reads_back_or_one_line_naming_the_file(spec_file: Path, spec: dict[str, Any]) -> None:
    _write(spec_file, spec)
    try:
        loaded = load_spec(spec_file, workdir=REPO)
    except SpecError as error:
        assert str(error).startswith(f"{spec_file}: ") and "\n" not in str(error) and error.exit_code == 2
        return
    dumped = json.dumps(loaded.model_dump(mode="json"))  # what is stored, and what the instance reads back
    assert json.dumps(type(loaded).model_validate(json.loads(dumped)).model_dump(mode="json")) == dumped
