"""QR codes drawn on the hub itself, as inline SVG: the page must work on a LAN
with no internet, and the CSP allows nothing from elsewhere (and no Pillow is
needed to draw vectors)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import qrcode
from markupsafe import Markup
from qrcode.image.svg import SvgPathImage


def qr_svg(text: str, *, label: str) -> Markup:
    """An `<svg>` element for `text`, sized by the stylesheet, named for screen readers.

    The fixed millimetre width and height the library writes are dropped so
    the CSS can make the code as wide as a phone allows; the viewBox keeps it square.
    """
    image = qrcode.make(text, image_factory=SvgPathImage, error_correction=qrcode.constants.ERROR_CORRECT_M)
    svg = image.get_image()
    for attribute in ("width", "height"):
        svg.attrib.pop(attribute, None)
    svg.set("class", "qr")
    svg.set("role", "img")
    svg.set("aria-label", label)
    title = ET.Element("title")
    title.text = label
    svg.insert(0, title)
    # The library names its elements without a namespace and writes xmlns as a
    # plain attribute, so this is HTML-ready: no XML declaration, no prefixes.
    return Markup(ET.tostring(svg, encoding="unicode"))
