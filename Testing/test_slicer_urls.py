"""Every URL into the extension's repository names a real file (or README heading), and the
repository is the one declared in Resources/CLADE.json (named Slicer*, per the Extensions Index).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: Where URLs into the repository are written (metadata read by Slicer's tools and the index).
METADATA_FILES = """
    CMakeLists.txt CLADE.s4ext Resources/CLADE.json README.md
    CLADESuperResolutionCLI/CLADESuperResolutionCLI.xml CLADESuperResolution/CLADESuperResolution.py
""".split()


def declaredRepository() -> tuple[str, str]:
    """(owner, name) from the catalog entry's scm_url: the one place the repository is named."""
    url = json.loads((REPO / "Resources" / "CLADE.json").read_text())["scm_url"]
    match = re.fullmatch(r"https://github\.com/([\w.-]+)/([\w.-]+?)(\.git)?", url)
    assert match, url
    return match.group(1), match.group(2)


def trackedTextFiles() -> list[Path]:
    names = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, encoding="utf-8", check=True
    ).stdout.split()
    files = []
    for name in names:
        path = REPO / name
        if (
            path.suffix.lower()
            in {
                ".py",
                ".md",
                ".txt",
                ".xml",
                ".json",
                ".s4ext",
                ".ui",
                ".toml",
                ".cfg",
                ".yml",
                ".yaml",
            }
            and path.is_file()
        ):
            files.append(path)
    return files


def githubAnchors(markdown: str) -> set[str]:
    """The anchors GitHub makes for a Markdown file's headings (lower case, punctuation
    dropped, spaces to hyphens, -1, -2... for repeats)."""
    anchors, seen = set(), {}
    inFence = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            inFence = not inFence
        if inFence:
            continue
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def test_anchor_rule():
    assert githubAnchors("# CLADE\n## 3D Slicer\n## Use it\n## Use it\n") == {
        "clade",
        "3d-slicer",
        "use-it",
        "use-it-1",
    }


def test_repository_name_follows_the_index_rule():
    owner, name = declaredRepository()
    assert name.startswith("Slicer"), name
    s4ext = dict(
        line.split(" ", 1)
        for line in (REPO / "CLADE.s4ext").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    assert s4ext["scmurl"] == f"https://github.com/{owner}/{name}.git"


def test_every_url_into_the_repository_names_a_real_file():
    owner, name = declaredRepository()
    pattern = re.compile(
        r"https://(?:raw\.githubusercontent\.com|github\.com)/([\w.-]+)/([\w.-]+?)"
        r"(?:\.git)?(?=[/#\"'\s<>)\]]|$)([^\s\"'<>)\]]*)"
    )
    checked, problems = 0, []
    scanned = trackedTextFiles()
    assert {REPO / name for name in METADATA_FILES} <= set(scanned)
    for path in scanned:
        text = path.read_text(encoding="utf-8", errors="replace")
        for match in pattern.finditer(text):
            urlOwner, urlName, rest = match.groups()
            if urlOwner.lower() != owner.lower():
                continue  # another project (Slicer, MONAI, ...)
            where = f"{path.relative_to(REPO)}: {match.group(0)}"
            if urlName != name:
                problems.append(f"{where} names repository {urlName!r}, not {name!r}")
                continue
            checked += 1
            rest, _, anchor = rest.partition("#")
            parts = [p for p in rest.split("/") if p]
            if parts[:1] in (["blob"], ["tree"], ["raw"]):
                parts = parts[2:]  # blob/<branch>/...
            elif "raw.githubusercontent.com" in match.group(0):
                parts = parts[1:]  # <branch>/...
            target = REPO.joinpath(*parts) if parts else REPO / "README.md"
            if not target.exists():
                problems.append(
                    f"{where} points at {'/'.join(parts)}, which is not in the repository"
                )
                continue
            if anchor:
                markdown = target if target.is_file() else target / "README.md"
                if anchor not in githubAnchors(markdown.read_text(encoding="utf-8")):
                    problems.append(
                        f"{where}: no heading #{anchor} in {markdown.relative_to(REPO)}"
                    )
    assert not problems, "\n".join(problems)
    assert checked >= 8  # homepage, icon, screenshots in CMake and s4ext, scm, docs


def test_metadata_agree_between_cmake_s4ext_and_catalog_entry():
    cmake = (REPO / "CMakeLists.txt").read_text()
    s4ext = dict(
        line.split(" ", 1)
        for line in (REPO / "CLADE.s4ext").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    entry = json.loads((REPO / "Resources" / "CLADE.json").read_text())

    def cmakeValue(name):
        match = re.search(rf'set\({name} "([^"]*)"\)', cmake)
        assert match, name
        return match.group(1)

    assert s4ext["homepage"] == cmakeValue("EXTENSION_HOMEPAGE")
    assert s4ext["iconurl"] == cmakeValue("EXTENSION_ICONURL")
    assert s4ext["screenshoturls"].split() == cmakeValue("EXTENSION_SCREENSHOTURLS").split()
    assert s4ext["category"] == cmakeValue("EXTENSION_CATEGORY") == entry["category"]
    assert s4ext["description"] == cmakeValue("EXTENSION_DESCRIPTION")
    assert s4ext["contributors"] == cmakeValue("EXTENSION_CONTRIBUTORS")
    assert s4ext["scmurl"] == entry["scm_url"] and s4ext["scmrevision"] == entry["scm_revision"]
    assert s4ext["depends"].split() == entry["build_dependencies"] == ["PyTorch"]
    assert cmakeValue("EXTENSION_STATUS") == s4ext["status"]


def test_screenshots_are_real_png_figures_in_the_repository():
    from PIL import Image

    s4ext = dict(
        line.split(" ", 1)
        for line in (REPO / "CLADE.s4ext").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    urls = s4ext["screenshoturls"].split()
    assert urls
    for url in urls:
        relative = url.split("/main/", 1)[1]
        with Image.open(REPO / relative) as image:
            assert image.format == "PNG" and min(image.size) >= 200
