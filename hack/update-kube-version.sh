#!/usr/bin/env bash
# Pins k8s.io/kubernetes to VERSION and every staging module it replaces with
# ./staging/src/... to the matching v0.x release, then tidies the module graph.
#
#   hack/update-kube-version.sh 1.37.2
#
# Upstream's go.mod points its staging modules at its own tree, which a
# library user does not have; without a replace line for each, the go command
# resolves them to v0.0.0 and fails. The staging list is read from the
# upstream go.mod, so a release that adds a staging module needs no edit here.
set -euo pipefail

version=${1:?usage: $0 VERSION (e.g. 1.37.2)}
version=${version#v}
staging_version="v0.${version#*.}"

cd "$(dirname "$0")/.."

upstream_mod=$(go mod download -json "k8s.io/kubernetes@v${version}" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
[ -f "$upstream_mod" ] || { echo "cannot read go.mod of k8s.io/kubernetes@v${version}" >&2; exit 1; }

staging=$(sed -n 's#^[[:space:]]*\(k8s.io/[^[:space:]]*\) => ./staging/src/.*#\1#p' "$upstream_mod")
[ -n "$staging" ] || { echo "no staging modules found in $upstream_mod" >&2; exit 1; }

# The script owns every k8s.io replace line: drop them all (a staging module
# upstream removed must not linger), then write the current set.
for old in $(sed -n 's#^[[:space:]]*\(replace[[:space:]]*\)\{0,1\}\(k8s.io/[^[:space:]]*\) => k8s.io/.*#\2#p' go.mod); do
  go mod edit -dropreplace="$old"
done

args=()
for mod in $staging; do
  args+=("-replace=${mod}=${mod}@${staging_version}")
done
go mod edit "${args[@]}"
go get "k8s.io/kubernetes@v${version}"
go mod tidy
echo "k8s.io/kubernetes v${version}, $(wc -w <<<"$staging") staging modules at ${staging_version}"
