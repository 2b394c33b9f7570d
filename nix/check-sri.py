"""Checks a built dashboard (trunk's dist/): every `integrity="sha384-..."` (Subresource Integrity) in index.html
matches the file it names, byte for byte, so no step after trunk (e.g. a rewrite of store paths) changed it.
Browsers refuse, or fetch twice, an asset whose hash does not match.

Usage: python3 nix/check-sri.py DIST_DIR
"""

import base64
import hashlib
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit


class Integrities(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, str]] = []  # (URL, integrity)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        url = a.get("href") or a.get("src")
        if a.get("integrity") and url:
            self.found.append((url, a["integrity"] or ""))


def main() -> int:
    dist = Path(sys.argv[1])
    parser = Integrities()
    parser.feed((dist / "index.html").read_text())
    bad = []
    for url, integrity in parser.found:
        # Relative to the page (Trunk.toml: public_url = "./"); a leading "/" means the same here.
        path = dist / unquote(urlsplit(url).path).lstrip("/")
        if not path.is_file():
            bad.append(f"{url}: no such file in {dist}")
            continue
        data = path.read_bytes()
        # Any one matching hash satisfies a browser; an unknown algorithm counts as a mismatch here.
        ok = False
        for item in integrity.split():
            algorithm, _, expected = item.partition("-")
            if algorithm in ("sha256", "sha384", "sha512"):
                ok = ok or base64.b64encode(hashlib.new(algorithm, data).digest()).decode() == expected
        if not ok:
            bad.append(f"{url}: integrity {integrity} does not match the file")
    for line in bad:
        print(f"check-sri: {line}", file=sys.stderr)
    if bad:
        return 1
    print(f"check-sri: {len(parser.found)} integrity hashes in {dist / 'index.html'} match their files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
