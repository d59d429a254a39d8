"""Admin page tests read the rendered HTML with beautifulsoup4: find elements by data-testid (and
attributes) and read their text and attributes, nested ones included."""

from __future__ import annotations

from dataclasses import dataclass

from bs4 import BeautifulSoup, NavigableString, Tag
from bs4.element import Script, Stylesheet, TemplateString


@dataclass(frozen=True)
class Element:
    """One element of a parsed page (a thin view over a beautifulsoup4 Tag)."""

    node: Tag

    @property
    def tag(self) -> str:
        return self.node.name

    @property
    def attrs(self) -> dict[str, str]:
        return self.node.attrs

    def attr(self, name: str) -> str | None:
        return self.node.get(name)

    @property
    def text(self) -> str:
        """The text inside, nested elements' included, whitespace collapsed; a space where an element
        starts keeps cells and lines apart, and none where it ends ("<b>9 UTC</b>, ok": "9 UTC, ok")."""
        parts = []
        for node in self.node.descendants:
            if isinstance(node, Tag):
                parts.append(" ")
            elif type(node) in (NavigableString, Script, Stylesheet, TemplateString):
                parts.append(node)
        return " ".join("".join(parts).split())

    def all(self, testid: str | None = None, *, tag: str | None = None, **attrs: str) -> list[Element]:
        """Descendants with this data-testid (and tag, and attributes: data_x="1" is data-x)."""
        wanted = {name.replace("_", "-"): value for name, value in attrs.items()}
        if testid is not None:
            wanted["data-testid"] = testid
        return [Element(found) for found in self.node.find_all(tag or True, attrs=wanted)]

    def one(self, testid: str | None = None, **attrs: str) -> Element:
        found = self.all(testid, **attrs)
        assert len(found) == 1, f"{len(found)} elements for {testid} {attrs}"
        return found[0]


def parse(html: bytes | str) -> Element:
    """The page as a tree; attribute values are strings as written (`class` too, not split)."""
    html = html.decode() if isinstance(html, bytes) else html
    return Element(BeautifulSoup(html, "html.parser", multi_valued_attributes=None))
