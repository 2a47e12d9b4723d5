#!/usr/bin/env bash
# Re-creates .dvc/plots/offline.html: the HTML page template that `dvc plots show` and
# `dvc plots diff` fill (`plots.html_template` in .dvc/config), with vega, vega-lite and vega-embed
# inlined so the page renders with no network. DVC's default page loads them from a CDN instead.
#
# The versions are the ones dvc-render 1.0.2's default page names (VegaRenderer.SCRIPTS in
# dvc_render/vega.py); the files are each package's browser build (its "jsdelivr" entry, the file
# that CDN serves), fetched from the npm registry with `npm pack` and checked against the pinned
# npm integrity hashes below. Each script is preceded by its package's LICENSE (BSD-3-Clause).
#
# The template keeps dvc-render's {plot_divs} and {refresh_tag} placeholders and deliberately has
# no {scripts} placeholder: dvc-render puts its CDN <script src=...> tags there, so leaving it out
# is what keeps the page offline. Run from anywhere: bash .dvc/plots/update_vega.sh
set -euo pipefail

PACKAGES=(
  # name version file-in-package npm-integrity
  "vega 5.20.2 build/vega.min.js sha512-qmH7aD9GGPpssVdxL1xgcdxTbQzyRUeRR16Os385ymvQhiwCYQNA6+eXUPAZDTVLfk0RXu6Jzj6kUE5jQ80EVw=="
  "vega-lite 5.2.0 build/vega-lite.min.js sha512-Yxcg8MvYfxHcG6BbkaKT0oVCIMIcE19UvqIsEwBmyd/7h2nzW7oRnID81T8UrY7hpDrIr6wa2JADOT2dhGNErw=="
  "vega-embed 6.18.2 build/vega-embed.min.js sha512-wcDyQPE4J5aiCDc3/suH5RQDvrKkjuLkhzUcbOLwEkNF8/+pp17tS0JghzEvAPNRg+5aG1/N2ydixq8Lk3dOlg=="
)

here="$(cd "$(dirname "$0")" && pwd)"
out="$here/offline.html"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cat >"$work/page.html" <<'HTML'
<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC Plot</title>
    <!-- Offline page template for dvc plots: vega, vega-lite and vega-embed are inlined below
         (made by .dvc/plots/update_vega.sh from the npm registry; do not edit by hand). -->
HTML

for entry in "${PACKAGES[@]}"; do
  read -r name version file integrity <<<"$entry"
  (cd "$work" && npm pack --silent "$name@$version" >/dev/null)
  tarball="$work/$name-$version.tgz"
  actual="sha512-$(node -e 'const c=require("crypto"),f=require("fs");
    process.stdout.write(c.createHash("sha512").update(f.readFileSync(process.argv[1])).digest("base64"))' "$tarball")"
  if [ "$actual" != "$integrity" ]; then
    echo "error: $name@$version: integrity $actual, expected $integrity" >&2
    exit 1
  fi
  mkdir -p "$work/$name"
  tar xzf "$tarball" -C "$work/$name"
  js="$work/$name/package/$file"
  license="$work/$name/package/LICENSE"
  # An inline script ends at the first "</script"; a license inside /* */ must not hold "*/".
  if grep -qi '</script' "$js" || grep -q '\*/' "$license"; then
    echo "error: $name@$version cannot be inlined as is" >&2
    exit 1
  fi
  {
    printf '    <script>\n/* %s %s (npm package %s@%s, %s), BSD-3-Clause:\n\n' \
      "$name" "$version" "$name" "$version" "$file"
    cat "$license"
    printf '*/\n'
    cat "$js"
    printf '\n    </script>\n'
  } >>"$work/page.html"
done

cat >>"$work/page.html" <<'HTML'
    <script>
    // vega-embed's "Open in Vega Editor" action sends the plot to an online editor: useless
    // offline, so it is turned off. Export as SVG/PNG and "View Source" keep working.
    (function () {
        var embed = window.vegaEmbed;
        window.vegaEmbed = Object.assign(function (el, spec, opt) {
            var actions = {export: true, source: true, compiled: true, editor: false};
            return embed(el, spec, Object.assign({actions: actions}, opt || {}));
        }, embed);
    })();
    </script>
    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
HTML

mv "$work/page.html" "$out"
echo "wrote $out ($(wc -c <"$out") bytes)"
