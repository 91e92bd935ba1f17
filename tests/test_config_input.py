"""Config input checked before parsing (issue 14, observation 7): regular files only, a size cap, a nesting
cap, and a [store] path that cannot work; each is one clear line and exit 78, never a hang or a traceback."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from pollerd.config import load_config
from pollerd.config import source as config_source
from pollerd.errors import ConfigError

EX_CONFIG = 78


def pollerd(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    def cap_memory() -> None:  # a regression must fail this test, not take the machine's memory
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
    return subprocess.run([sys.executable, "-m", "pollerd", *args], capture_output=True, text=True,
                          timeout=timeout, preexec_fn=cap_memory, env={**os.environ, "PYTHONWARNINGS": "ignore"})


def assert_one_clear_line(res: subprocess.CompletedProcess[str], *words: str) -> None:
    assert res.returncode == EX_CONFIG, (res.returncode, res.stderr[-2000:])
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr[-2000:]
    for w in words:
        assert w in lines[0], lines[0]


def test_check_on_a_fifo_does_not_hang(tmp_path: Path) -> None:
    fifo = tmp_path / "pollerd.toml"
    os.mkfifo(fifo)
    assert_one_clear_line(pollerd("check", str(fifo), timeout=30), "not a regular file", "FIFO")


def test_check_on_dev_zero_does_not_read_for_ever() -> None:
    assert_one_clear_line(pollerd("check", "/dev/zero", timeout=30), "not a regular file", "character device")


def test_check_on_a_directory(tmp_path: Path) -> None:
    assert_one_clear_line(pollerd("check", str(tmp_path), timeout=30), "directory")


def test_a_config_nested_3000_deep_is_a_config_error_with_a_line(tmp_path: Path) -> None:
    p = tmp_path / "deep.toml"
    p.write_text('[gateway]\nname = "gw"\nx = ' + "[" * 3000 + "]" * 3000 + "\n")
    with pytest.raises(ConfigError) as info:
        load_config(p, environ={})
    assert info.value.line == 3 and "nested" in str(info.value)
    assert_one_clear_line(pollerd("check", str(p)), "nested")


def test_brackets_in_strings_and_comments_do_not_count() -> None:
    deep = "[" * 100
    text = (f'# {deep}\na = "{deep} \\" {deep}"\nb = \'{deep}\'\nc = """\n{deep}\n"""\n'
            f"d = '''{deep}'''\ne = [[1, 2], {{ f = [3] }}]\n")
    assert config_source.too_deep(text) is None
    assert config_source.too_deep("a = " + "[" * 33 + "]" * 33) == 1
    assert config_source.too_deep("a = 1\n\nb = " + "[" * 32 + "]" * 32) is None


def test_a_config_over_the_size_cap_is_refused_before_reading_it(tmp_path: Path) -> None:
    p = tmp_path / "big.toml"
    with open(p, "wb") as f:
        f.truncate(config_source.MAX_CONFIG_BYTES + 1)
    with pytest.raises(ConfigError, match="too large"):
        load_config(p, environ={})


STORE_ONLY = '[gateway]\nname = "gw"\n[store]\npath = "{path}"\n'


def test_a_store_path_that_is_a_directory_fails_check_and_run_with_78(tmp_path: Path) -> None:
    (tmp_path / "db").mkdir()
    cfg = tmp_path / "pollerd.toml"
    cfg.write_text(STORE_ONLY.format(path=tmp_path / "db"))
    assert_one_clear_line(pollerd("check", str(cfg)), "store.path", "is a directory")
    assert_one_clear_line(pollerd("run", "--config", str(cfg), "--state-dir", str(tmp_path / "state")),
                          "store.path", "is a directory")


def test_a_store_path_below_a_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    cfg = tmp_path / "pollerd.toml"
    cfg.write_text(STORE_ONLY.format(path=tmp_path / "afile" / "sub" / "pollerd.db"))
    with pytest.raises(ConfigError, match="(?i)not a directory") as info:
        load_config(cfg, environ={})
    assert info.value.key == "store.path" and info.value.line == 4


def test_a_store_path_not_yet_there_is_fine(tmp_path: Path) -> None:
    cfg = tmp_path / "pollerd.toml"
    cfg.write_text(STORE_ONLY.format(path=tmp_path / "new" / "dir" / "pollerd.db"))
    assert load_config(cfg, environ={}).store.path == str(tmp_path / "new" / "dir" / "pollerd.db")
