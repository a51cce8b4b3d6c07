"""`medvid train` never destroys a run: a second start without --resume is refused and changes
nothing; --resume auto continues it (longer runs allowed); a resume with another config is refused."""

import hashlib
import json
from pathlib import Path

from medvid_tinyrun import tiny_config

from medvid.cli import main
from medvid.config import save_yaml
from medvid.utils.checkpoint import latest_checkpoint


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


def test_second_start_is_refused_and_resume_continues(tiny_data, tmp_path, capsys):
    cfg_file = tmp_path / "tiny.yaml"
    save_yaml(tiny_config(tiny_data["latent_dir"], max_steps=2, keep_last=1), cfg_file)
    run = tmp_path / "run"
    assert main(["train", "--config", str(cfg_file), "--out", str(run)]) == 0
    before = digest(run)
    assert latest_checkpoint(run).name == "step-00000002"

    # The reported failure: a new run into the same folder pruned the old checkpoints, cut
    # metrics.jsonl and overwrote config.yaml. Now nothing is touched.
    capsys.readouterr()
    assert main(["train", "--config", str(cfg_file), "--out", str(run), "--max_steps", "1"]) == 2
    err = capsys.readouterr().err
    assert f"--out {run} already holds a run (latest checkpoint step-00000002)" in err and "--resume auto" in err
    assert digest(run) == before

    # Another learning rate on resume: refused, the difference listed, nothing touched.
    assert main(["train", "--config", str(cfg_file), "--out", str(run), "--resume", "auto",
                 "--optim.ema_decay", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "optim.ema_decay: 0.9999 -> 0.5" in err
    assert digest(run) == before

    # A longer run resumes.
    assert main(["train", "--config", str(cfg_file), "--out", str(run), "--resume", "auto", "--max_steps", "3"]) == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert latest_checkpoint(run).name == "step-00000003"
