"""The README's commands: the two set-up commands exist, and every `medvid ...` line parses.

Each command's behaviour is exercised by the tests of its module (tests/data, tests/latents,
tests/flow, tests/training, tests/sampling, tests/metrics, tests/t2v, tests/curation, tests/vlm);
this test keeps the README in step with the real flags.
"""

import re
import shlex
from pathlib import Path

import pytest

from medvid.cli import COMMANDS, build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def readme_commands() -> list[list[str]]:
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    cmds = []
    for block in blocks:
        text = block.replace("\\\n", " ")
        for line in text.splitlines():
            line = line.split(" #", 1)[0].strip()
            if line.startswith("#"):  # a comment line
                continue
            words = shlex.split(line) if line else []
            if "medvid" in words:
                cmds.append(words[words.index("medvid") + 1 :])
    return cmds


def test_first_lines_are_the_two_setup_commands():
    first = README.split("```bash\n", 1)[1].split("```", 1)[0].splitlines()
    assert [line.split("#")[0].strip() for line in first] == ["make demo", "make test"]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:.*\n\tmedvid demo", makefile, flags=re.M)
    assert re.search(r"^test:.*\n\t\$\(PYTHON\) -m pytest", makefile, flags=re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_readme_shows_every_pipeline_stage():
    shown = {c[0] for c in readme_commands()}
    assert set(COMMANDS) - {"demo"} <= shown, f"not in the README: {set(COMMANDS) - shown}"


@pytest.mark.parametrize("argv", readme_commands(), ids=lambda a: " ".join(a[:2]))
def test_readme_command_parses(argv):
    assert argv[0] in COMMANDS, f"README shows an unknown command: medvid {argv[0]}"
    parser = build_parser(argv[0])
    args = parser.parse_args(argv)
    assert args.command == argv[0] and callable(args._main)


def config_header_commands() -> list[tuple[str, list[str]]]:
    """`medvid ...` commands shown in the comment headers of configs/*.yaml (`[--opt]` is optional)."""
    cmds = []
    for path in sorted((ROOT / "configs").rglob("*.yaml")):
        lines = [ln[1:].strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.startswith("#")]
        text = "\n".join(lines).replace("\\\n", " ")
        for line in text.splitlines():
            m = re.search(r"(?:^|\s)medvid ([a-z][a-z-]*)\b", line)
            if not m or m.group(1) not in COMMANDS or "..." in line:  # prose, or an elided command
                continue
            words = shlex.split(line[m.start(1):].replace("[", "").replace("]", ""))
            cmds.append((path.name, words))
    return cmds


@pytest.mark.parametrize("name,argv", config_header_commands(), ids=lambda x: x if isinstance(x, str) else x[0])
def test_config_header_command_parses(name, argv):
    assert argv[0] in COMMANDS, f"{name} shows an unknown command: medvid {argv[0]}"
    args = build_parser(argv[0]).parse_args(argv)
    assert args.command == argv[0]


def cpu_section_commands() -> list[list[str]]:
    section = README.split("## Your own data, on a CPU", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0].replace("\\\n", " ")
    return [shlex.split(ln.split(" #", 1)[0])[1:] for ln in block.splitlines() if ln.strip().startswith("medvid")]


# Appended to each README command in the test: the same flow at a few steps (argparse keeps the last value).
FAST = {"train-vae": ["--steps", "2", "--compensation-steps", "1", "--no-progress"],
        "encode": ["--clips-per-video", "2", "--no-progress"], "flow-features": ["--no-progress"],
        "train": ["--max_steps", "2", "--ckpt_every", "2", "--progress", "false"],
        "sample": ["--num", "2", "--steps", "2"], "evaluate": ["--num-clips", "2", "--bootstrap", "0"]}


@pytest.mark.slow
def test_cpu_section_runs_as_written(tmp_path, monkeypatch):
    """The "Your own data, on a CPU" commands, in order, on two small videos, with only the step
    counts lowered: every stage's defaults must follow the previous stage's outputs."""
    import json

    from medvid import cli
    from medvid.data.synthetic import write_video

    src = tmp_path / "videos"
    src.mkdir()
    write_video(src / "a.mp4", num_frames=96, height=72, width=96, fps=30)
    write_video(src / "b.mp4", num_frames=80, height=72, width=96, fps=30, kind="avi")
    monkeypatch.chdir(tmp_path)
    commands = cpu_section_commands()
    assert [c[0] for c in commands] == ["prepare", "train-vae", "vae-eval", "encode", "flow-features", "train",
                                        "sample", "evaluate"]
    for argv in commands:
        argv = [str(src) if a == "/data/my_videos" else str(ROOT / a) if a.startswith("configs/") else a for a in argv]
        rc = cli.main(argv + FAST.get(argv[0], []))
        assert rc == 0, f"medvid {' '.join(argv)} exited {rc}"
    vae_eval = json.loads((tmp_path / "runs/own/vae-eval/vae_eval.json").read_text())
    assert (vae_eval["resolution"], vae_eval["num_frames"]) == (64, 8)
    metrics = json.loads((tmp_path / "runs/own/eval/metrics.json").read_text())
    assert metrics["settings"]["real_protocol"]["resolution"] == 64
    assert len(metrics["references"]) == 3  # training clips, noisy copy, VAE round trip
    assert "fd_effnet_clip" in metrics["metrics"]


@pytest.mark.parametrize("command", ["prepare", "train-vae", "vae-eval", "encode", "sample", "evaluate", "demo"])
def test_every_help_shows_defaults(command, capsys):
    parser = build_parser(command)
    with pytest.raises(SystemExit):
        parser.parse_args([command, "--help"])
    text = "".join(capsys.readouterr().out.split())  # wrapping may split a long default
    sub = next(a for a in parser._actions if isinstance(a, __import__("argparse")._SubParsersAction)).choices[command]
    for action in sub._actions:
        if action.option_strings and action.nargs != 0 and action.default not in (None, "==SUPPRESS=="):
            assert f"default:{action.default}".replace(" ", "") in text or "default" in (action.help or "").lower(), action.dest
