"""The help of every command states units, axis order, defaults and directions."""

import argparse
import re

import pytest

from neuropil.cli import build_parser


def leaf_parsers(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not actions:
        yield prefix, parser
        return
    for name, child in actions[0].choices.items():
        yield from leaf_parsers(child, (*prefix, name))


COMMANDS = list(leaf_parsers(build_parser()))


def options(parser):
    return [a for a in parser._actions if not isinstance(a, argparse._HelpAction) and a.dest != "verbose"]


def problems(parser) -> list[str]:
    found = []
    for action in options(parser):
        name = action.option_strings[-1] if action.option_strings else action.dest.upper()
        text = (action.help or "").replace("%(default)s", str(action.default))
        lowered = text.lower()
        if not text.strip():
            found.append(f"{name}: no help")
            continue
        unset = action.default is None or action.default is False or action.default in (argparse.SUPPRESS, [])
        if not unset and "default" not in lowered:
            found.append(f"{name}: its default ({action.default!r}) is not stated")
        if action.metavar == ("Z", "Y", "X") and not re.search(r"\bnm\b|voxels", lowered):
            found.append(f"{name}: Z Y X without a unit (nm or voxels)")
        if "voxel_size" in action.dest and not ("nm" in lowered and "z y x" in lowered):
            found.append(f"{name}: a voxel size needs 'nm' and 'z y x'")
        if "threshold" in action.dest and not re.search(r"higher|lower|above|below|more|fewer", lowered):
            found.append(f"{name}: a threshold needs its direction")
        if action.dest in ("memory",) and "gib" not in lowered:
            found.append(f"{name}: memory needs its unit")
    return found


@pytest.mark.parametrize("names, parser", COMMANDS, ids=[" ".join(names) for names, _ in COMMANDS])
def test_help_states_units_defaults_and_directions(names, parser):
    assert problems(parser) == []


@pytest.mark.parametrize("command", ["predict", "segment"])
def test_commands_on_affinities_say_which_way_they_go(command):
    (parser,) = [p for names, p in COMMANDS if names == (command,)]
    description = parser.description.lower()
    assert "1 = same object" in description


def test_the_checks_catch_a_bad_help():
    parser = argparse.ArgumentParser()
    parser.add_argument("--voxel-size", type=float, nargs=3, metavar=("Z", "Y", "X"), help="voxel size")
    parser.add_argument("--threshold", type=float, default=0.5, help="the threshold")
    found = problems(parser)
    assert any("--voxel-size" in f and "unit" in f for f in found)
    assert any("--threshold" in f and "default" in f for f in found)
    assert any("--threshold" in f and "direction" in f for f in found)
