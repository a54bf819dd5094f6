#!/usr/bin/env bash
# Clones the repositories of a context-selection corpus (bare, from GitHub) into
# DIR/<owner>/<name>, and fetches each one's pinned commit where the clone lacks it; a clone
# already there is reused. Usage: scripts/fetch-corpus.sh DIR [CORPUS]
# (CORPUS defaults to docs/context-corpus.toml). Then: orion eval corpus --repos DIR
set -euo pipefail
shopt -s lastpipe
dir="${1:?usage: scripts/fetch-corpus.sh DIR [CORPUS]}"
corpus="${2:-$(dirname "$0")/../docs/context-corpus.toml}"
python3 - "$corpus" <<'PY' | while read -r name commit; do
import re, sys, tomllib
# The same rule as `orion eval corpus`: owner/name of letters, digits, -, _ and ., neither
# part . or .., and a whole commit id; anything else stops the script before any clone.
part = re.compile(r"[A-Za-z0-9._-]+")
repos = [(r["name"], r["commit"]) for r in tomllib.load(open(sys.argv[1], "rb"))["repo"]]
for name, commit in repos:
    parts = name.split("/")
    if len(parts) != 2 or any(not part.fullmatch(p) or p in (".", "..") for p in parts):
        sys.exit(f"refusing `{name}`: not an owner/name")
    if not re.fullmatch(r"[0-9a-fA-F]{40}", commit):
        sys.exit(f"refusing `{name}`: `{commit}` is not a whole commit id")
print("\n".join(f"{name} {commit}" for name, commit in repos))
PY
  target="$dir/$name"
  if [ ! -d "$target" ]; then
    echo "cloning $name"
    git clone --bare --quiet "https://github.com/$name" "$target"
  fi
  if ! git --git-dir="$target" cat-file -e "$commit^{commit}" 2>/dev/null; then
    echo "fetching $name $commit"
    git --git-dir="$target" fetch --quiet origin "$commit"
  fi
done
