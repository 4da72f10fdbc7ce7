"""Private atomic JSON state files, and the stores built on them, shared by two servers."""

from __future__ import annotations

import threading

from jupyter_lims_bridge.recent import RecentOpens
from jupyter_lims_bridge.statefile import lock_path, read_json, update_private_json


def test_updates_from_many_threads_are_all_kept(tmp_path):
    # Given one state file updated from several threads at once
    path = tmp_path / "state" / "counts.json"

    def bump(name: str) -> None:
        for i in range(50):
            update_private_json(path, lambda d, i=i: d.setdefault(f"{name}-{i}", i) == i)

    threads = [threading.Thread(target=bump, args=(n,)) for n in "abcd"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    # Then every entry is there, and the file and its lock are private
    assert len(read_json(path)) == 200
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert oct(lock_path(path).stat().st_mode & 0o777) == "0o600"


def test_an_unreadable_or_misshapen_file_reads_as_the_default(tmp_path):
    path = tmp_path / "x.json"
    path.write_text("{not json")
    assert read_json(path) == {}
    path.write_text("[1]")
    assert read_json(path) == {} and read_json(path, list) == [1]


def test_recent_opens_of_two_servers_sharing_a_state_dir_are_merged(tmp_path):
    # Given two servers' recent lists on one file
    path = tmp_path / "recent.json"
    first, second = RecentOpens(path), RecentOpens(path)
    # When each records an open
    first.add({"type": "sample", "id": "A"}, "lims/a.ipynb", "2026-12-01T10:00:00Z")
    second.add({"type": "sample", "id": "B"}, "lims/b.ipynb", "2026-12-01T10:01:00Z")
    # Then both lists show both, newest first
    for recent in (first, second):
        assert [e["path"] for e in recent.list()] == ["lims/b.ipynb", "lims/a.ipynb"]


def test_proxy_tokens_created_by_many_stores_on_one_file_are_all_kept(tmp_path):
    # Given four token stores on one file (a server, the tokens command, a named server…)
    from jupyter_lims_bridge.proxy_tokens import ProxyTokenStore

    path = tmp_path / "proxy_tokens.json"
    stores = [ProxyTokenStore(path) for _ in range(4)]

    def create(store: ProxyTokenStore, name: str) -> None:
        for i in range(25):
            store.create(f"{name}-{i}")

    # When each creates tokens at the same time
    threads = [threading.Thread(target=create, args=(s, str(n))) for n, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    # Then none was lost, and a revocation through one store reaches every other
    assert len(ProxyTokenStore(path).list()) == 100
    victim = stores[0].list()[0]["id"]
    stores[1].revoke(victim)
    assert victim not in {t["id"] for t in stores[2].list()}
    assert len(stores[3].list()) == 99
