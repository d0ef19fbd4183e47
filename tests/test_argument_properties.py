"""Property tests of every ``nnunet-scd`` subcommand's argument parser.

Random argument sets, valid and invalid, must either parse or end in argparse's one-line error (exit
status 2) naming the problem; nothing else, and no traceback. Parsing does no work, so this runs fast.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nnunet_scd.cli import build_parser
from nnunet_scd.commands.arguments import float_at_least, int_at_least, plans_identifier, writable_file

PARSER = build_parser()
SUBPARSERS = next(a for a in PARSER._actions if isinstance(a, argparse._SubParsersAction)).choices
# A valid core per command, so that random options also land on argument sets that parse.
VALID_CORE = {
    "plan": ["-d", "17"],
    "slim": ["-d", "1", "-c", "3d_fullres", "-f", "0", "--budget", "0.7"],
    "tokens": ["-d", "1", "-tr", "nnUNetTrainerSCD"],
    "convert-btcv": ["RawData"],
}


def _options(command: str) -> list[str]:
    return sorted(option for action in SUBPARSERS[command]._actions for option in action.option_strings
                  if option not in ("-h", "--help"))


VALUES = st.one_of(
    st.integers(-10**20, 10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", "0", "-1", "0.5", "1e309", "nan", "../x", "a/b", "x y", "/", "3d_fullres", "paper-btcv",
                     "a" * 300]),  # a file name longer than the file system takes
    st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), max_size=8),  # one-line values
)


def test_every_subcommand_is_covered() -> None:
    assert set(SUBPARSERS) == {"demo", "study", "synth", "plan", "convert-btcv", "bench", "slim", "tokens",
                               "env"}


@pytest.mark.parametrize("command", sorted(SUBPARSERS))
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_arguments_parse_or_give_one_line_usage_error(command: str, data: st.DataObject) -> None:
    options = _options(command)
    argv = [command, *data.draw(st.sampled_from([[], VALID_CORE.get(command, [])]), label="core")]
    pairs = data.draw(st.lists(st.tuples(st.sampled_from(options), st.lists(VALUES, max_size=3)), max_size=4)
                      if options else st.just([]), label="options")
    for option, values in pairs:
        argv += [option, *values]
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            PARSER.parse_args(argv)
            return
        except SystemExit as exit_info:
            code = exit_info.code
    lines = err.getvalue().strip().splitlines()
    assert code == 2, (argv, err.getvalue())
    # Unrecognized arguments are reported by the top-level parser, everything else by the subcommand's.
    assert lines[-1].startswith((f"nnunet-scd {command}: error: ", "nnunet-scd: error: ")), (argv, err.getvalue())
    assert "Traceback" not in err.getvalue()


@given(minimum=st.integers(-5, 5), value=st.one_of(st.integers(-10**30, 10**30).map(str), st.text(max_size=6)))
def test_int_at_least_returns_the_value_or_names_the_bound(minimum: int, value: str) -> None:
    try:
        parsed = int_at_least(minimum)(value)
    except argparse.ArgumentTypeError as error:
        assert "expected an integer" in str(error) or f"at least {minimum}" in str(error)
    else:
        assert parsed == int(value) and parsed >= minimum


@given(value=st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.text(max_size=6)))
def test_float_at_least_accepts_finite_numbers_in_range_only(value: str) -> None:
    try:
        parsed = float_at_least(0.5)(value)
    except argparse.ArgumentTypeError as error:
        assert "expected a number" in str(error) or "at least 0.5" in str(error)
    else:
        assert math.isfinite(parsed) and parsed >= 0.5


@given(name=st.text(max_size=12))
def test_a_plans_identifier_is_a_plain_name_or_refused(name: str) -> None:
    try:
        parsed = plans_identifier(name)
    except argparse.ArgumentTypeError as error:
        assert "is not a plans identifier" in str(error)
    else:
        assert parsed == name and name and "/" not in name and "\\" not in name and ".." not in name


@given(name=st.one_of(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\0")),
                      st.integers(1, 600).map(lambda n: "a" * n),
                      st.sampled_from(["/", ".", "/proc/1/x", "/dev/null/x", "tests", "x/" * 200])))
def test_an_output_path_is_accepted_or_refused_as_a_usage_error(name: str) -> None:
    # Regression: a file name longer than the file system takes raised OSError out of argparse (a traceback).
    try:
        writable_file(name)
    except argparse.ArgumentTypeError as error:
        assert str(error).endswith("choose another path")
