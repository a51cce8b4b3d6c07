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
