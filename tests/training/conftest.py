import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # the shared helpers in medvid_tinyrun.py
from medvid_tinyrun import make_tiny_data  # noqa: E402


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    return make_tiny_data(tmp_path_factory.mktemp("tinydata"))
