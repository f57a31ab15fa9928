"""Dockerfile parsing, variable substitution and .dockerignore matching."""

import json
import os
import re

from . import Failure

KNOWN = {"FROM", "ARG", "ENV", "WORKDIR", "COPY", "RUN", "LABEL", "USER", "EXPOSE", "VOLUME",
         "HEALTHCHECK", "ENTRYPOINT", "CMD"}
_BRACED_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:[-+])([^}]*))?\}")
_PLAIN_VAR = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")


class Instr:
    """One instruction: upper-case command, its (continuation-joined) arguments, first line."""

    def __init__(self, cmd, rest, lineno):
        self.cmd, self.rest, self.lineno = cmd, rest, lineno

    def where(self):
        """Location prefix for error messages."""
        return f"Dockerfile line {self.lineno}: {self.cmd}"


class Stage:
    """A FROM block: its base image (unsubstituted), optional name and instructions."""

    def __init__(self, index, base, name, lineno):
        self.index, self.base, self.name, self.lineno = index, base, name, lineno
        self.instrs = []

    @property
    def label(self):
        """The stage's name, or stage<index> for an unnamed stage."""
        return self.name or f"stage{self.index}"


def _instructions(path):
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    instrs, buf, start = [], None, None
    for i, line in enumerate(lines, 1):
        s = line.strip()
        if buf is None:
            if not s or s.startswith("#"):
                continue
            buf, start = "", i
        elif not s or s.startswith("#"):
            continue  # comment and empty lines inside a continuation are dropped, as by Docker
        m = re.search(r"\\[ \t]*$", line)
        if m:
            buf += line[:m.start()]
            continue
        buf += line
        m = re.match(r"([A-Za-z]+)(\s+(.*))?$", buf.strip(), re.S)
        if not m:
            raise Failure(f"Dockerfile line {start}: cannot parse {buf.strip()!r}")
        cmd = m.group(1).upper()
        if cmd not in KNOWN:
            raise Failure(f"Dockerfile line {start}: instruction {cmd} is not supported by "
                          f"this checker (supported: {', '.join(sorted(KNOWN))})")
        instrs.append(Instr(cmd, (m.group(3) or "").strip(), start))
        buf = None
    if buf is not None:
        raise Failure("Dockerfile ends inside a line continuation")
    return instrs


def parse_dockerfile(path):
    """Returns (ARG instructions before the first FROM, [Stage]); unsupported syntax fails."""
    global_args, stages = [], []
    for ins in _instructions(path):
        if ins.cmd == "FROM":
            flags, rest = split_flags(ins.rest)
            if flags:
                raise Failure(f"{ins.where()}: flags {flags} not supported")
            words = rest.split()
            if len(words) == 1:
                base, name = words[0], None
            elif len(words) == 3 and words[1].upper() == "AS":
                base, name = words[0], words[2].lower()
            else:
                raise Failure(f"{ins.where()}: cannot parse {ins.rest!r}")
            stages.append(Stage(len(stages), base, name, ins.lineno))
        elif not stages:
            if ins.cmd != "ARG":
                raise Failure(f"{ins.where()}: only ARG may come before the first FROM")
            global_args.append(ins)
        else:
            stages[-1].instrs.append(ins)
    if not stages:
        raise Failure("Dockerfile has no FROM")
    return global_args, stages


def split_flags(rest):
    """Leading --name=value flags (COPY, FROM, RUN, HEALTHCHECK options) -> (dict, rest)."""
    flags = {}
    while True:
        m = re.match(r"--([a-z-]+)(=(\S*))?\s*", rest)
        if not m:
            return flags, rest
        flags[m.group(1)] = m.group(3) if m.group(2) else "true"
        rest = rest[m.end():]


def json_list(rest):
    """The exec form (a JSON list of strings) as a list, or None for the shell form."""
    if rest.startswith("["):
        try:
            v = json.loads(rest)
        except ValueError:
            return None
        if isinstance(v, list) and all(isinstance(x, str) for x in v):
            return v
    return None


def substitute(text, variables, where):
    """Dockerfile variable expansion: $V, ${V}, ${V:-word}, ${V:+word}, \\$ escapes."""
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text) and text[i + 1] == "$":
            out.append("$")
            i += 2
            continue
        if c != "$":
            out.append(c)
            i += 1
            continue
        m = _BRACED_VAR.match(text, i)
        if m:
            name, op, word = m.group(1), m.group(2), m.group(3)
            val = variables.get(name)
            if op == ":-":
                val = val if val else word
            elif op == ":+":
                val = word if val else ""
            out.append(val or "")
            i = m.end()
            continue
        m = _PLAIN_VAR.match(text, i)
        if m:
            out.append(variables.get(m.group(1), ""))
            i = m.end()
            continue
        if text.startswith("${", i):
            raise Failure(f"{where}: unsupported variable expression in {text!r}")
        out.append(c)
        i += 1
    return "".join(out)


class DockerIgnore:
    """The build context's .dockerignore with moby/patternmatcher rules: cleaned patterns, **
    spans directories, a pattern that matches a parent directory excludes everything below it,
    the last matching line wins."""

    def __init__(self, context):
        self.patterns = []  # (negated, compiled regex)
        path = os.path.join(context, ".dockerignore")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                for line in f:
                    line = line.strip()
                    if not line or line.startswith("#"):
                        continue
                    neg = line.startswith("!")
                    if neg:
                        line = line[1:].strip()
                    line = os.path.normpath(line).lstrip("/")
                    if line not in ("", "."):
                        self.patterns.append((neg, re.compile(self._regex(line))))
        self.has_negation = any(neg for neg, _ in self.patterns)

    @staticmethod
    def _regex(pattern):
        out, i = ["^"], 0
        while i < len(pattern):
            c = pattern[i]
            if pattern.startswith("**", i):
                i += 2
                if pattern.startswith("/", i):
                    out.append("(.*/)?")
                    i += 1
                else:
                    out.append(".*")
                continue
            if c == "*":
                out.append("[^/]*")
            elif c == "?":
                out.append("[^/]")
            else:
                out.append(re.escape(c))
            i += 1
        out.append("$")
        return "".join(out)

    def excluded(self, rel):
        """Whether the context-relative path `rel` is left out of the build context."""
        rel = rel.strip("/")
        if not rel or rel == ".":
            return False
        parts = rel.split("/")
        candidates = ["/".join(parts[:k]) for k in range(1, len(parts) + 1)]
        matched = False
        for neg, rx in self.patterns:
            if any(rx.match(c) for c in candidates):
                matched = not neg
        return matched
