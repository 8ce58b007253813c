"""bot/domain/mrkdwn.py: untrusted text is escaped, Quorum's own mentions are kept, and nothing
outside the rendering modules builds a `Mrkdwn` by hand."""

from __future__ import annotations

import re

import pytest

from bot.domain import mrkdwn
from bot.domain.mrkdwn import Mrkdwn, md
from tests.paths import REPO

HOSTILE = "<!channel> <https://evil.example|approve here> &amp; <@U0RM1> *bold* `code`"


def test_escape_neutralises_every_control_sequence() -> None:
    escaped = mrkdwn.escape(HOSTILE)

    assert isinstance(escaped, Mrkdwn)
    assert "<" not in escaped
    assert ">" not in escaped
    assert escaped.startswith(
        "&lt;!channel&gt; &lt;https://evil.example|approve here&gt; &amp;amp;"
    )
    assert mrkdwn.escape(escaped) == escaped  # already safe: not escaped twice


def test_md_escapes_plain_values_and_keeps_mrkdwn_ones() -> None:
    text = md("{} froze {}: {}", mrkdwn.user("U0RM1"), "feature/<!here>", HOSTILE)

    assert text.startswith("<@U0RM1> froze feature/&lt;!here&gt;: &lt;!channel&gt;")
    assert text.count("<") == 1  # the one mention Quorum meant
    assert md("{name} ({n})", name="a&b", n=3) == "a&amp;b (3)"


@pytest.mark.parametrize(
    ("build", "wanted"),
    [
        (lambda: mrkdwn.user("U0WEB1"), "<@U0WEB1>"),
        (lambda: mrkdwn.user("W0ORG1"), "<@W0ORG1>"),
        (lambda: mrkdwn.user("!channel"), "!channel"),
        (lambda: mrkdwn.user("U1>|<!here"), "U1&gt;|&lt;!here"),
        (lambda: mrkdwn.user("u0web1"), "u0web1"),
        (lambda: mrkdwn.channel("C0WEB"), "<#C0WEB>"),
        (lambda: mrkdwn.channel("C0WEB|x><!here"), "C0WEB|x&gt;&lt;!here"),
        (lambda: mrkdwn.usergroup("S0SRE"), "<!subteam^S0SRE>"),
        (lambda: mrkdwn.usergroup("S0>|<!channel"), "S0&gt;|&lt;!channel"),
        (lambda: mrkdwn.code("a`b<c>"), "`a'b&lt;c&gt;`"),
    ],
)
def test_mentions_only_for_well_formed_ids(build: object, wanted: str) -> None:
    assert callable(build)
    assert build() == wanted


def test_links_only_for_http_urls_with_an_escaped_label() -> None:
    assert mrkdwn.link("https://ci.example/r?a=1&b=2", "<!here>") == (
        "<https://ci.example/r?a=1&amp;b=2|&lt;!here&gt;>"
    )
    assert mrkdwn.link("javascript:alert(1)", "run") == "run"
    assert mrkdwn.link("https://x.example/|<!channel>", "ok") == "ok"


def test_string_operations_lose_the_type_and_edges_escape_plain_text() -> None:
    safe = mrkdwn.user("U0WEB1")
    assert type(safe + "!") is str  # concatenation is not safe by construction
    assert type(mrkdwn.join(", ", [safe, "<!here>"])) is Mrkdwn
    assert mrkdwn.join(", ", [safe, "<!here>"]) == "<@U0WEB1>, &lt;!here&gt;"
    assert mrkdwn.as_mrkdwn("<@U0WEB1>") == "&lt;@U0WEB1&gt;"
    assert mrkdwn.as_mrkdwn(safe) == "<@U0WEB1>"
    assert mrkdwn.strip(md(" {}. ", "x"), " .") == "x"


_BUILDS = re.compile(r"\bMrkdwn\(")
_MAY_BUILD = {"bot/domain/mrkdwn.py", "handlers/blocks.py"}


def test_only_the_rendering_modules_build_mrkdwn_directly() -> None:
    offenders = [
        str(path.relative_to(REPO))
        for package in ("bot", "handlers", "storage")
        for path in (REPO / package).rglob("*.py")
        if str(path.relative_to(REPO)) not in _MAY_BUILD and _BUILDS.search(path.read_text())
    ]
    assert offenders == []
