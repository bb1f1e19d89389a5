"""The thread policy (issue #11): --threads, SVILAB_THREADS, OMP_NUM_THREADS, else one thread."""

from __future__ import annotations

import json

import pytest
import torch

from svilab.cli import _take_threads, main
from svilab.threads import available_cores, choose_threads, parse_threads


def test_policy_order_and_default():
    assert choose_threads(None, {}) == 1
    assert choose_threads(None, {"OMP_NUM_THREADS": "3"}) == 3
    assert choose_threads(None, {"OMP_NUM_THREADS": "3", "SVILAB_THREADS": "2"}) == 2
    assert choose_threads("4", {"OMP_NUM_THREADS": "3", "SVILAB_THREADS": "2"}) == 4
    assert choose_threads("auto", {}) == available_cores()


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5", " "])
def test_bad_thread_counts_name_their_source(value):
    if value.strip() == "":
        assert parse_threads(value) is None
        return
    with pytest.raises(ValueError, match="--threads"):
        parse_threads(value)
    with pytest.raises(ValueError, match="OMP_NUM_THREADS"):
        choose_threads(None, {"OMP_NUM_THREADS": value})


def test_threads_option_before_or_after_the_command():
    assert _take_threads(["exact", "--threads", "2", "--json"]) == ("2", ["exact", "--json"])
    assert _take_threads(["vae", "train", "--threads=3"]) == ("3", ["vae", "train"])
    assert _take_threads(["--threads", "2", "exact"]) == (None, ["--threads", "2", "exact"])


def test_cli_sets_and_records_threads(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("SVILAB_THREADS", raising=False)
    before = torch.get_num_threads()
    try:
        assert main(["exact", "--json", "--out", str(tmp_path / "a")]) == 0
        assert json.loads((tmp_path / "a" / "config.json").read_text())["threads"] == 1
        assert main(["--threads", "2", "exact", "--json", "--out", str(tmp_path / "b")]) == 0
        assert json.loads((tmp_path / "b" / "config.json").read_text())["threads"] == 2
        capsys.readouterr()
        assert main(["exact", "--threads", "zero", "--out", str(tmp_path / "c")]) == 2
        assert "--threads must be a positive integer or 'auto'" in capsys.readouterr().err
        assert not (tmp_path / "c").exists()
    finally:
        torch.set_num_threads(before)
