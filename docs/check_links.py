#!/usr/bin/env python3
"""Checks every relative Markdown link: the target file exists and any #anchor is a heading there.

Usage, from the repository root:
  python3 docs/check_links.py README.md ARCHITECTURE.md SECURITY.md docs/*.md clients/python/README.md

Anchors are GitHub's: the heading lowercased, characters other than letters, digits, `-`, `_` and
spaces dropped, spaces turned into `-`, and `-1`, `-2`, ... added to repeated headings.
Exits 1 when a link is broken.
"""
import os, re, sys
def slugs(path):
    out, seen, fence = set(), {}, False
    for line in open(path):
        if line.startswith('```'): fence = not fence; continue
        m = None if fence else re.match(r'^(#{1,6})\s+(.*?)\s*#*\s*$', line)
        if not m: continue
        s = re.sub(r'[^\w\- ]', '', m.group(2).strip().lower()).replace(' ', '-')
        n = seen.get(s, 0); seen[s] = n + 1
        out.add(s if n == 0 else f'{s}-{n}')
    return out
files = sys.argv[1:]
bad = checked = 0
for f in files:
    text = open(f).read()
    text_nofence = re.sub(r'```.*?```', '', text, flags=re.S)
    for m in re.finditer(r'\]\(([^)\s]+)\)', text_nofence):
        t = m.group(1)
        if re.match(r'^[a-z]+:', t): continue
        checked += 1
        p, _, a = t.partition('#')
        tp = os.path.normpath(os.path.join(os.path.dirname(f), p)) if p else f
        if not os.path.exists(tp):
            print(f'{f}: {t}: no file {tp}'); bad += 1; continue
        if a and (not tp.endswith('.md') or a not in slugs(tp)):
            print(f'{f}: {t}: no heading #{a} in {tp}'); bad += 1
print(f'{checked} relative links checked, {bad} broken')
sys.exit(1 if bad else 0)
