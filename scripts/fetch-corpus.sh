#!/usr/bin/env bash
# Clones the repositories of a context-selection corpus (bare, from GitHub) into
# DIR/<owner>/<name>, and fetches each one's pinned commit where the clone lacks it; a clone
# already there is reused. Usage: scripts/fetch-corpus.sh DIR [CORPUS]
# (CORPUS defaults to docs/context-corpus.toml). Then: orion eval corpus --repos DIR
set -euo pipefail
dir="${1:?usage: scripts/fetch-corpus.sh DIR [CORPUS]}"
corpus="${2:-$(dirname "$0")/../docs/context-corpus.toml}"
python3 - "$corpus" <<'PY' | while read -r name commit; do
import sys, tomllib
for repo in tomllib.load(open(sys.argv[1], "rb"))["repo"]:
    print(repo["name"], repo["commit"])
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
