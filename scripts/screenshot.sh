#!/usr/bin/env bash
# Render the audit report to a PNG with headless Chromium (`make screenshot`).
#
#   scripts/screenshot.sh [HTML] [PNG]
#
# Defaults: data/reports/audit.html -> data/reports/audit.png. The page is laid
# out SCREENSHOT_WIDTH pixels wide (default 1400) and captured at its full
# height: a first headless pass loads a copy of the page with a one-line script
# that records the document's scroll height, then the screenshot is taken with a
# window exactly that tall. SCREENSHOT_HEIGHT fixes the height instead (the page
# is cut there); a page taller than SCREENSHOT_MAX_HEIGHT (default 30000) is cut
# there with a warning. The HTML is self-contained, and Chromium is started with
# its background networking off, so nothing is fetched.
set -euo pipefail

html="${1:-data/reports/audit.html}"
png="${2:-${html%.html}.png}"
width="${SCREENSHOT_WIDTH:-1400}"
fixed_height="${SCREENSHOT_HEIGHT:-}"
max_height="${SCREENSHOT_MAX_HEIGHT:-30000}"

die() {
    echo "screenshot: error: $*" >&2
    exit 1
}
for setting in "SCREENSHOT_WIDTH=$width" "SCREENSHOT_MAX_HEIGHT=$max_height" ${fixed_height:+"SCREENSHOT_HEIGHT=$fixed_height"}; do
    [[ "${setting#*=}" =~ ^[1-9][0-9]*$ ]] || die "${setting%%=*} must be a positive number of pixels, got '${setting#*=}'"
done

browser=""
for candidate in chromium chromium-browser; do
    if command -v "$candidate" >/dev/null 2>&1; then
        browser="$candidate"
        break
    fi
done
[ -n "$browser" ] || die "chromium not found; install it (Debian/Ubuntu: sudo apt-get install -y chromium)"
[ -f "$html" ] || die "$html not found; run the pipeline first (make run, or .venv/bin/dvc repro report)"

abs_html="$(cd "$(dirname "$html")" && pwd)/$(basename "$html")"
mkdir -p "$(dirname "$png")"
abs_png="$(cd "$(dirname "$png")" && pwd)/$(basename "$png")"
profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT
rm -f "$abs_png"

# Chromium logs harmless D-Bus/GPU complaints on stderr in containers; keep them
# out of the way unless a pass fails.
log="$profile/chromium.log"
chrome() {
    "$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync \
        --hide-scrollbars --user-data-dir="$profile" "$@" 2>>"$log"
}

if [ -n "$fixed_height" ]; then
    height="$fixed_height"
else
    probe="$profile/measure.html"
    cp "$abs_html" "$probe"
    echo "<script>addEventListener('load',()=>{const m=document.createElement('meta');m.name='memclean-page-height';m.content=Math.ceil(Math.max(document.documentElement.scrollHeight,document.body?document.body.scrollHeight:0));document.head.append(m)})</script>" >>"$probe"
    dom="$(chrome --window-size="$width,600" --dump-dom "file://$probe")" || true
    height="$(sed -n 's/.*name="memclean-page-height" content="\([0-9]*\)".*/\1/p' <<<"$dom" | head -n 1)"
    if [ -z "$height" ]; then
        cat "$log" >&2
        die "could not measure the height of $html; set SCREENSHOT_HEIGHT to capture a fixed height"
    fi
fi
if [ "$height" -gt "$max_height" ]; then
    echo "screenshot: warning: the page is $height px tall; capturing the first $max_height px (raise SCREENSHOT_MAX_HEIGHT)" >&2
    height="$max_height"
fi

if ! chrome --window-size="$width,$height" --screenshot="$abs_png" "file://$abs_html" >/dev/null || [ ! -s "$abs_png" ]; then
    cat "$log" >&2
    die "chromium did not write $abs_png"
fi
echo "screenshot: $abs_png (${width}x${height})"
