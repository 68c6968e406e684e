# Sourced by scripts/test and .ci/run: the browser the page's tests drive (Debian's
# chromium; Playwright's own browser download is not used). Installs it with apt when it
# is missing and we may (root, or sudo without a password); otherwise says how.
ensure_chromium() {
    if command -v chromium >/dev/null 2>&1; then
        return 0
    fi
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        if sudo -n true 2>/dev/null; then
            sudo="sudo -n"
        else
            echo "the browser tests need chromium: run 'sudo apt-get install chromium'" >&2
            return 1
        fi
    fi
    echo "installing chromium with apt (the browser tests drive it)" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium >/dev/null
}
