"""``nnunet-scd bench`` refuses nonsense numbers with one line, before it builds or times anything."""

from __future__ import annotations

import pytest

from nnunet_scd.commands import bench


@pytest.mark.parametrize("argv,message", [
    (["--warmup", "-1"], "--warmup: must be at least 0, got -1"),  # was a StatisticsError after the timing
    (["--repeats", "0"], "--repeats: must be at least 1, got 0"),
    (["--feature-size", "0"], "--feature-size: must be at least 1, got 0"),  # was a conv3d RuntimeError
    (["--completion-dim", "0"], "--completion-dim: must be at least 1"),
    (["--completion-depth", "-2"], "--completion-depth: must be at least 0, got -2"),  # ran with no completion
    (["--whole-volume", "--volume-scale", "0"], "--volume-scale: must be a number of at least 1, got 0"),
    (["--per-volume", "--volume-scale", "0.5"], "--volume-scale: must be a number of at least 1, got 0.5"),
    (["--per-volume", "--mirror", "sideways"], "--mirror: invalid choice: 'sideways'"),
    (["--per-volume", "--whole-volume"], "--whole-volume: not allowed with argument --per-volume"),
    (["--per-volume", "--profile", "dense"], "--profile: not allowed with argument --per-volume"),
])
def test_nonsense_numbers_are_one_line_errors_before_any_work(argv, message, capsys, parse_bench):
    with pytest.raises(SystemExit) as exit_info:
        parse_bench(*argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_network_scdnet_refuses_is_a_one_line_error_before_timing():
    from nnunet_scd.geometry import CONFIGS

    config = CONFIGS["tiny"].with_extra(completion_dim=7, completion_heads=2)
    with pytest.raises(SystemExit, match="not a valid SCDNet: completion width 7 is not divisible by its 2 heads"):
        bench._check_network(config)


def test_an_odd_completion_width_gets_a_network_with_heads_that_divide_it():
    # The issue's `--completion-dim 7` was a traceback; SCDNet now picks heads that divide the width.
    from nnunet_scd.geometry import CONFIGS

    bench._check_network(CONFIGS["tiny"].with_extra(completion_dim=7))


@pytest.mark.parametrize("argv,message", [
    # Mirroring is the per-volume mode's option; elsewhere it would be silently ignored.
    (["--config", "tiny", "--mirror", "on"], "error: --mirror applies to --per-volume only"),
    # A scan too large to generate is refused before any network is built or timed, not a MemoryError later.
    (["--config", "paper-btcv", "--per-volume", "--volume-scale", "1000"], "choose a smaller volume scale"),
])
def test_per_volume_option_errors_are_one_line_before_any_work(argv, message, parse_bench):
    args = parse_bench(*argv)
    with pytest.raises(SystemExit) as exit_info:
        args.run(args)
    text = str(exit_info.value.code)
    assert message in text and "\n" not in text
