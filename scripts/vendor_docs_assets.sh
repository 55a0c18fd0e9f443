#!/usr/bin/env bash
# Re-vendor the assets that /docs (Swagger UI) and /redoc serve from the package, so that the
# documentation pages load with no network access. Fetches the npm packages with `npm pack`,
# copies only the files the pages use plus their licences into service/static/, and rewrites
# service/static/VERSIONS.md (versions, sources, licences, sha256).
#
#   scripts/vendor_docs_assets.sh [SWAGGER_UI_VERSION] [REDOC_VERSION]
#
# FastAPI emits OpenAPI 3.1, which needs Swagger UI 5; ReDoc 2 reads 3.1 as well.
set -euo pipefail
cd "$(dirname "$0")/.."

SWAGGER_UI_VERSION=${1:-5.35.0}
REDOC_VERSION=${2:-2.5.4}
DEST=service/static

case "$SWAGGER_UI_VERSION" in 5.*) ;; *) echo "Swagger UI 5.x is needed for OpenAPI 3.1" >&2; exit 2 ;; esac
case "$REDOC_VERSION" in 2.*) ;; *) echo "ReDoc 2.x is expected" >&2; exit 2 ;; esac

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "swagger-ui-dist@$SWAGGER_UI_VERSION" "redoc@$REDOC_VERSION" >/dev/null)
mkdir -p "$work/swagger-ui" "$work/redoc"
tar -xzf "$work/swagger-ui-dist-$SWAGGER_UI_VERSION.tgz" -C "$work/swagger-ui" --strip-components=1
tar -xzf "$work/redoc-$REDOC_VERSION.tgz" -C "$work/redoc" --strip-components=1

rm -rf "$DEST/swagger-ui" "$DEST/redoc"
mkdir -p "$DEST/swagger-ui" "$DEST/redoc"
# the files are copied unchanged: their checksums can be compared with the npm tarballs'
for f in swagger-ui-bundle.js swagger-ui-bundle.js.LICENSE.txt swagger-ui.css favicon-32x32.png LICENSE NOTICE; do
  cp "$work/swagger-ui/$f" "$DEST/swagger-ui/$f"
done
for f in bundles/redoc.standalone.js bundles/redoc.standalone.js.LICENSE.txt LICENSE; do
  cp "$work/redoc/$f" "$DEST/redoc/$(basename "$f")"
done
# ReDoc's "API docs by Redocly" sidebar link shows a logo from cdn.redoc.ly: an empty src
# makes the image fail at once (ReDoc then hides it) instead of requesting another host
logo='"https://cdn.redoc.ly/redoc/logo-mini.svg"'
patched=$(grep -oF "$logo" "$DEST/redoc/redoc.standalone.js" | wc -l)
sed -i "s#${logo//./\\.}#\"\"#g" "$DEST/redoc/redoc.standalone.js"
if grep -qF "$logo" "$DEST/redoc/redoc.standalone.js"; then echo "patching the ReDoc logo failed" >&2; exit 1; fi

total=$(cat "$DEST"/swagger-ui/* "$DEST"/redoc/* | wc -c)
{
  echo "# Vendored documentation assets"
  echo
  echo "Served by \`service/api/http/docs.py\` under \`/docs/static/\`, so that \`/docs\` and \`/redoc\` need no"
  echo "network access. Written by \`scripts/vendor_docs_assets.sh\`; re-run it to change versions."
  echo
  echo "| package | version | from | licence |"
  echo "|---|---|---|---|"
  echo "| \`swagger-ui-dist\` | $SWAGGER_UI_VERSION | npm registry, \`npm pack swagger-ui-dist@$SWAGGER_UI_VERSION\` | Apache-2.0: \`swagger-ui/LICENSE\`, \`swagger-ui/NOTICE\`; bundled code: \`swagger-ui/swagger-ui-bundle.js.LICENSE.txt\` |"
  echo "| \`redoc\` | $REDOC_VERSION | npm registry, \`npm pack redoc@$REDOC_VERSION\` (\`bundles/\`) | MIT: \`redoc/LICENSE\`; bundled code: \`redoc/redoc.standalone.js.LICENSE.txt\` |"
  echo
  if [ "$patched" -gt 0 ]; then
    echo "The files are copies from the packages with one change: in \`redoc.standalone.js\` the"
    echo "logo of the \"API docs by Redocly\" link, \`https://cdn.redoc.ly/redoc/logo-mini.svg\`, is"
    echo "replaced by an empty \`src\` ($patched occurrence(s)), so the page requests nothing from"
    echo "another host (the image fails at once and ReDoc hides it; the link text stays)."
  else
    echo "The files are unchanged copies from the packages."
  fi
  echo "\`swagger-ui.css\` and \`redoc.standalone.js\`"
  echo "end in \`sourceMappingURL\` comments naming source maps that are not vendored: browsers fetch"
  echo "those only with developer tools open."
  echo "Total size: $total bytes."
  echo
  echo "| file | bytes | sha256 |"
  echo "|---|---:|---|"
  (cd "$DEST" && for f in swagger-ui/* redoc/*; do
    echo "| \`$f\` | $(wc -c <"$f") | \`$(sha256sum "$f" | cut -d' ' -f1)\` |"
  done)
} >"$DEST/VERSIONS.md"
echo "vendored swagger-ui-dist $SWAGGER_UI_VERSION and redoc $REDOC_VERSION into $DEST ($total bytes)"
