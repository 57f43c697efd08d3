#!/usr/bin/env bash
# Render the audit report to a PNG with headless Chromium (`make screenshot`).
#
#   scripts/screenshot.sh [HTML] [PNG]
#
# Defaults: data/reports/audit.html -> data/reports/audit.png. The window is
# SCREENSHOT_WIDTH x SCREENSHOT_HEIGHT pixels (default 1400x4000); the page is
# cut at that height. The HTML is self-contained, and Chromium is started with
# its background networking off, so nothing is fetched.
set -euo pipefail

html="${1:-data/reports/audit.html}"
png="${2:-${html%.html}.png}"
width="${SCREENSHOT_WIDTH:-1400}"
height="${SCREENSHOT_HEIGHT:-4000}"

browser=""
for candidate in chromium chromium-browser; do
    if command -v "$candidate" >/dev/null 2>&1; then
        browser="$candidate"
        break
    fi
done
if [ -z "$browser" ]; then
    echo "screenshot: error: chromium not found; install it (Debian/Ubuntu: sudo apt-get install -y chromium)" >&2
    exit 1
fi
if [ ! -f "$html" ]; then
    echo "screenshot: error: $html not found; run the pipeline first (make run, or .venv/bin/dvc repro report)" >&2
    exit 1
fi

abs_html="$(cd "$(dirname "$html")" && pwd)/$(basename "$html")"
mkdir -p "$(dirname "$png")"
abs_png="$(cd "$(dirname "$png")" && pwd)/$(basename "$png")"
profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT
rm -f "$abs_png"

# Chromium logs harmless D-Bus/GPU complaints on stderr in containers; keep them
# out of the way unless the screenshot fails.
log="$profile/chromium.log"
if ! "$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync \
        --hide-scrollbars --user-data-dir="$profile" --window-size="$width,$height" \
        --screenshot="$abs_png" "file://$abs_html" >"$log" 2>&1 || [ ! -s "$abs_png" ]; then
    cat "$log" >&2
    echo "screenshot: error: chromium did not write $abs_png" >&2
    exit 1
fi
echo "screenshot: $abs_png (${width}x${height})"
