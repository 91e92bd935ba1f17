"""What a reload changes, worked out from two config files alone (pollerd.daemon.reload.plan_reload): the
supervisor executes exactly this plan, so every rule of "what restarts" is checked here without a daemon."""

from __future__ import annotations

import pytest

from pollerd.config import Config, load_config
from pollerd.daemon import ReloadRefused
from pollerd.daemon.reload import plan_reload


def config(tmp_path, text: str) -> Config:  # type: ignore[no-untyped-def]
    path = tmp_path / f"c{len(list(tmp_path.iterdir()))}.toml"
    path.write_text(text)
    return load_config(path)


def text(*, gateway: str = "gw", spread: str = "0s", port_a: int = 1, store: str = "",
         meters: tuple[tuple[str, str, int], ...] = (("a1", "A", 1), ("a2", "A", 2), ("b5", "B", 5)),
         sinks: tuple[tuple[str, str], ...] = (("up1", "http://127.0.0.1:9/a"),),
         daily: tuple[str, ...] = ()) -> str:
    out = [f'[gateway]\nname = "{gateway}"\nspread = "{spread}"\n']
    if store:
        out.append(f'[store]\npath = "{store}"\n')
    out.append(f'[[lines]]\nname = "A"\ntype = "tcp"\nhost = "127.0.0.1"\nport = {port_a}\n')
    out.append('[[lines]]\nname = "B"\ntype = "tcp"\nhost = "127.0.0.1"\nport = 2\n')
    for name, line, address in meters:
        period = 'period_type = "daily"\nat = "01:00"\n' if name in daily else 'interval_time = "1m"\n'
        out.append(f'[[meters]]\nname = "{name}"\nprotocol = "mercury230"\nline = "{line}"\n'
                   f'connection_address = {address}\n{period}')
    for name, url in sinks:
        out.append(f'[[sinks]]\nname = "{name}"\ntype = "http"\nurl = "{url}"\n')
    return "\n".join(out)


def plan(old: Config, new: Config, running: tuple[str, ...] = ("a1", "a2", "b5"),
         states: tuple[str, ...] = ("a1", "a2", "b5")):  # type: ignore[no-untyped-def]
    return plan_reload(old, new, running=running, states=states, sinks={s.name: s for s in old.sinks})


def test_an_unchanged_file_changes_nothing_even_with_tables_moved(tmp_path):
    old = config(tmp_path, text())
    new = config(tmp_path, "\n\n# moved down\n" + text())
    p = plan(old, new)
    assert p.summary() == ""
    assert not (p.meters_added | p.meters_removed | p.meters_restarted | p.lines_changed | p.sinks_restarted)


def test_meters_added_removed_and_changed(tmp_path):
    old = config(tmp_path, text())
    new = config(tmp_path, text(meters=(("a1", "A", 3), ("b5", "B", 5), ("b6", "B", 6))))
    p = plan(old, new)
    assert (p.meters_added, p.meters_removed, p.meters_restarted) == ({"b6"}, {"a2"}, {"a1"})
    assert p.summary() == "meters added: b6; meters removed: a2; meters restarted: a1"


def test_a_changed_line_restarts_every_meter_on_it_and_nothing_else(tmp_path):
    old = config(tmp_path, text())
    p = plan(old, config(tmp_path, text(port_a=7)))
    assert p.lines_changed == {"A"} and p.meters_restarted == {"a1", "a2"}
    assert not p.meters_added and not p.meters_removed and not p.sinks_restarted


def test_a_new_spread_restarts_only_calendar_meters(tmp_path):
    old = config(tmp_path, text(daily=("b5",)))
    p = plan(old, config(tmp_path, text(spread="10m", daily=("b5",))))
    assert p.meters_restarted == {"b5"}


def test_renaming_the_gateway_restarts_every_sink(tmp_path):
    sinks = (("up1", "http://127.0.0.1:9/a"), ("up2", "http://127.0.0.1:9/b"))
    old = config(tmp_path, text(sinks=sinks))
    assert plan(old, config(tmp_path, text(sinks=sinks))).sinks_restarted == set()
    p = plan(old, config(tmp_path, text(gateway="gw2", sinks=sinks)))
    assert p.sinks_restarted == {"up1", "up2"}
    p = plan(old, config(tmp_path, text(sinks=(("up2", "http://127.0.0.1:9/c"), ("up3", "http://127.0.0.1:9/d")))))
    assert (p.sinks_added, p.sinks_removed, p.sinks_restarted) == ({"up3"}, {"up1"}, {"up2"})


def test_a_meter_that_never_started_is_added_again_and_its_state_dropped_once_gone(tmp_path):
    # An earlier reload could not build a2's driver: it has state (with an alarm) but is not running.
    old = config(tmp_path, text())
    p = plan(old, config(tmp_path, text()), running=("a1", "b5"))
    assert p.meters_added == {"a2"} and not p.states_dropped
    p = plan(old, config(tmp_path, text(meters=(("a1", "A", 1), ("b5", "B", 5)))), running=("a1", "b5"))
    assert p.states_dropped == {"a2"} and not p.meters_removed


def test_another_store_path_is_refused(tmp_path):
    old = config(tmp_path, text())
    with pytest.raises(ReloadRefused, match="store.path changed"):
        plan(old, config(tmp_path, text(store=str(tmp_path / "other.db"))))
