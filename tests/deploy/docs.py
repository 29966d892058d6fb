"""Reading docs/deploy-*.md: fenced blocks (by the `<!-- check: NAME -->` marker before
them) and the commands in shell blocks, split the way a shell would."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from k8s import ROOT

DOCS = ROOT / "docs"
FENCE = re.compile(r"(?:<!-- check: (?P<name>[\w-]+) -->\n)?```(?P<lang>\w*)\n(?P<body>.*?)\n```", re.S)


@dataclass
class Block:
    name: str | None
    lang: str
    body: str


def blocks(doc: str) -> list[Block]:
    text = (DOCS / doc).read_text()
    return [Block(m["name"], m["lang"], m["body"]) for m in FENCE.finditer(text)]


def named(doc: str) -> dict[str, Block]:
    out: dict[str, Block] = {}
    for b in blocks(doc):
        if b.name:
            assert b.name not in out, f"{doc}: two blocks named {b.name}"
            out[b.name] = b
    return out


@dataclass
class Command:
    env: dict[str, str]
    argv: list[str]
    line: str


def commands(body: str) -> list[Command]:
    """Simple commands of a shell block: continuations joined, comments dropped, split at
    `&&`, `|`, `;`; leading VAR=value assignments separated; heredoc bodies skipped."""
    out: list[Command] = []
    lines = body.replace("\\\n", " ").splitlines()
    heredoc_end = None
    for line in lines:
        if heredoc_end:
            if line.strip() == heredoc_end:
                heredoc_end = None
            continue
        m = re.search(r"<<'?(\w+)'?", line)
        if m:
            heredoc_end = m.group(1)
            line = line[: m.start()]
        lexer = shlex.shlex(line, posix=True, punctuation_chars="|&;<>")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        current: list[str] = []
        for token in list(lexer) + ["&&"]:
            if token in ("&&", "|", ";", "||"):
                if current:
                    env = {}
                    while current and re.fullmatch(r"[A-Z_]+=.*", current[0]):
                        key, _, value = current.pop(0).partition("=")
                        env[key] = value
                    if current:
                        out.append(Command(env, current, line.strip()))
                current = []
            elif token in (">", "<", ">>"):
                current.append(token)
            else:
                current.append(token)
        # Redirections are not arguments.
    for cmd in out:
        while ">" in cmd.argv:
            i = cmd.argv.index(">")
            del cmd.argv[i : i + 2]
    return out


def all_commands(doc: str) -> list[tuple[Block, Command]]:
    return [(b, c) for b in blocks(doc) if b.lang == "sh" for c in commands(b.body)]


def flags(argv: list[str], with_value: set[str]) -> tuple[list[str], dict[str, list[str]]]:
    """Positional arguments and {flag: [values]} (`--x=y` and `--x y` alike)."""
    positional: list[str] = []
    opts: dict[str, list[str]] = {}
    i = 0
    while i < len(argv):
        token = argv[i]
        if token.startswith("-") and token != "-":
            name, eq, value = token.partition("=")
            if not eq and name in with_value:
                i += 1
                value = argv[i]
            opts.setdefault(name, []).append(value)
        else:
            positional.append(token)
        i += 1
    return positional, opts


def path_in_repo(p: str) -> Path:
    return (ROOT / p).resolve()
