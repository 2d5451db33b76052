"""The documentation holds together: every relative Markdown link of README.md,
CHANGELOG.md and docs/*.md names a file of the repository (and, with an anchor, a
heading of that file, slugged as GitHub does), the README links every page of docs/,
and the README stays a README (at most 300 lines)."""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from urllib.parse import unquote

from markdown_it import MarkdownIt
from markdown_it.token import Token

from cdpipe import PROJECT_ROOT

README_MAX_LINES = 300
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
# CommonMark, as GitHub reads it: fenced code and code spans hold no links or headings.
MARKDOWN = MarkdownIt("commonmark")


def documents() -> list[Path]:
    return [PROJECT_ROOT / "README.md", PROJECT_ROOT / "CHANGELOG.md",
            *sorted((PROJECT_ROOT / "docs").glob("*.md"))]


def tokens(path: Path) -> list[Token]:
    return MARKDOWN.parse(path.read_text(encoding="utf-8"))


def plain(inline: Token) -> str:
    """An inline token's text as shown (a link by its text, code by its content)."""
    return "".join(child.content for child in inline.children or []
                   if child.type in ("text", "code_inline"))


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: its text (links by their text, no markup) in lower
    case, every character but letters, digits, spaces, '-' and '_' removed, spaces '-'."""
    text = plain(MARKDOWN.parseInline(heading)[0]).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a Markdown file's headings (a repeated one also as slug-1, -2...)."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    parsed = tokens(path)
    for opening, inline in itertools.pairwise(parsed):
        if opening.type != "heading_open":
            continue
        base = slug(inline.content)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> list[str]:
    """The relative link targets of a Markdown file (no http(s), mailto or other scheme)."""
    targets = []
    for block in tokens(path):
        for child in block.children or []:
            target = child.attrs.get("href") or child.attrs.get("src")
            if child.type in ("link_open", "image") and isinstance(target, str):
                targets.append(target)
    return [t for t in targets if t and not SCHEME.match(t)]


def broken_links(path: Path, root: Path = PROJECT_ROOT) -> list[str]:
    """Each link of the file that names no file under root, or no heading of it."""
    problems = []
    for target in links(path):
        file_part, _, anchor = target.partition("#")
        where = (path.parent / unquote(file_part)).resolve() if file_part else path
        name = f"{path.relative_to(root).as_posix()}: ({target})"
        if not where.is_relative_to(root.resolve()) or not where.exists():
            problems.append(f"{name} names no file of the repository")
        elif anchor and where.suffix == ".md" and unquote(anchor) not in anchors(where):
            problems.append(f"{name}: {where.name} has no heading #{anchor}")
    return problems


def test_every_relative_link_names_a_file_and_a_heading_of_it() -> None:
    problems = [problem for path in documents() for problem in broken_links(path)]
    assert problems == []


def test_the_links_are_read() -> None:
    """The parser finds the documents' links and anchors (a check that read none would
    pass): the README's to docs/, anchors among them, and none from a code block."""
    readme = links(PROJECT_ROOT / "README.md")
    assert any(t.startswith("docs/") and "#" not in t for t in readme)
    assert any(t.startswith("docs/") and "#" in t for t in readme)
    assert sum(len(links(path)) for path in documents()) > 50
    assert "the-scalers-iam-policy" in anchors(PROJECT_ROOT / "docs" / "aws.md")


def test_a_missing_file_or_heading_is_reported(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text("# A page\n\n## The scaler's `IAM` policy\n")
    readme = tmp_path / "README.md"
    readme.write_text(
        "[ok](docs/page.md) [ok](docs/page.md#the-scalers-iam-policy) [ok](#top)\n"
        "# Top\n"
        "[web](https://example.com/x.md) `[code](nowhere.md)`\n"
        "```\n[fenced](nowhere.md)\n```\n"
        "[gone](docs/gone.md) [no heading](docs/page.md#nothing) [out](../outside.md)\n")
    assert broken_links(readme, tmp_path) == [
        "README.md: (docs/gone.md) names no file of the repository",
        "README.md: (docs/page.md#nothing): page.md has no heading #nothing",
        "README.md: (../outside.md) names no file of the repository",
    ]


def test_slugs_are_githubs() -> None:
    assert slug("The scaler's IAM policy") == "the-scalers-iam-policy"
    assert slug("Keys (the contract)") == "keys-the-contract"
    assert slug("The fault suite (`tests/faults/`)") == "the-fault-suite-testsfaults"
    assert slug("Production that scales itself: the scaler on the proxy machine") == (
        "production-that-scales-itself-the-scaler-on-the-proxy-machine")
    assert slug("monitor_rules and the [AWS](aws.md) path") == "monitor_rules-and-the-aws-path"


def test_the_readme_links_every_docs_page() -> None:
    linked = {(PROJECT_ROOT / t.partition("#")[0]).resolve()
              for t in links(PROJECT_ROOT / "README.md")}
    pages = {p.resolve() for p in (PROJECT_ROOT / "docs").glob("*.md")}
    assert sorted(p.name for p in pages - linked) == []


def test_the_readme_has_at_most_300_lines() -> None:
    lines = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"


def test_the_security_page_names_tests_that_exist() -> None:
    """docs/security.md lists, for each protection, the tests that fail without it:
    every file and test function it names exists (`::name` alone: the file named before
    it in the same row)."""
    missing = []
    for row in (PROJECT_ROOT / "docs" / "security.md").read_text().splitlines():
        current = None
        for ref in re.findall(r"`((?:tests/[\w/]+\.py)?(?:::\w+)?)`", row):
            path, _, name = ref.partition("::")
            if path:
                current = PROJECT_ROOT / path
                if not current.exists():
                    missing.append(ref)
                    continue
            if name and (current is None or f"def {name}(" not in current.read_text()):
                missing.append(ref)
    assert missing == []
