"""The bounded memo every hot-path cache uses (``proxy.util.memo.remember``)."""

from __future__ import annotations

from proxy.util.memo import remember


def test_remember_keeps_and_returns_the_value() -> None:
    """The value is stored under its key and handed back for the caller to use."""
    memo: dict[str, int] = {}
    assert remember(memo, "a", 1, limit=3) == 1
    assert memo == {"a": 1}


def test_a_full_memo_is_cleared_before_the_next_value_so_it_never_grows_past_its_limit() -> None:
    """Distinct keys without end (a client inventing paths or models) cannot grow it: at the
    limit everything is forgotten and the newest value starts it again."""
    memo: dict[int, int] = {}
    for key in range(10):
        remember(memo, key, key * key, limit=4)
        assert len(memo) <= 4
    assert memo == {8: 64, 9: 81}
