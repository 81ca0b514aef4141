"""mkdocs hooks for the docket site (mkdocs.yml names this file under ``hooks``).

The guides in docs/ link to files elsewhere in the repository (``../examples/...``,
``../benchmarks/README.md``, ``../CHANGELOG.md``): right on the repository's file view,
outside the site. Here each such link must name a file or folder that exists (otherwise a
warning, which strict mode turns into a failed build), and is rendered as that path: a link
into the repository when mkdocs.yml sets ``repo_url``, the path as code text when it does not.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

log = logging.getLogger("mkdocs.hooks.docket")

# An inline link [text](target), target without spaces or a title; not an image.
_LINK = re.compile(r"(?<!!)\[(?P<text>[^\]\n]+)\]\((?P<target>[^)\s]+)\)")
_FENCE = re.compile(r"^(```|~~~)", re.MULTILINE)


def _outside_link(
    match: re.Match[str], page_dir: Path, docs_dir: Path, root: Path, repo_url: str | None
) -> str:
    text, target = match.group("text"), match.group("target")
    if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith(("#", "/")):
        return match.group(0)
    path_part, hash_sign, fragment = target.partition("#")
    resolved = (page_dir / path_part).resolve()
    if resolved == docs_dir or docs_dir in resolved.parents:
        return match.group(0)  # a page of the site: mkdocs validates it
    try:
        relative = resolved.relative_to(root)
    except ValueError:
        log.warning("link %r leaves the repository", target)
        return match.group(0)
    if not resolved.exists():
        log.warning("link %r: %s does not exist in the repository", target, relative)
        return match.group(0)
    shown = relative.as_posix() + ("/" if resolved.is_dir() else "")
    if repo_url:
        kind = "tree" if resolved.is_dir() else "blob"
        url = f"{repo_url.rstrip('/')}/{kind}/HEAD/{relative.as_posix()}{hash_sign}{fragment}"
        return f"[{text}]({url})"
    if text.startswith("`"):
        return text  # the text already is the path
    return f"{text} (`{shown}` in the repository)"


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    docs_dir = Path(config["docs_dir"]).resolve()
    root = Path(config["config_file_path"]).resolve().parent
    page_dir = (docs_dir / page.file.src_uri).parent
    repo_url = config.get("repo_url")
    # Leave fenced code blocks alone: split on fences, rewrite only the prose between them.
    out: list[str] = []
    in_code = False
    for chunk in _FENCE.split(markdown):
        if chunk in ("```", "~~~"):
            in_code = not in_code
        elif not in_code:
            chunk = _LINK.sub(lambda m: _outside_link(m, page_dir, docs_dir, root, repo_url), chunk)
        out.append(chunk)
    return "".join(out)
