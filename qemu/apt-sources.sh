# Functions that read a machine's apt sources (sourced by qemu/setup.sh; tested by
# tests/apt_sources.rs on sample inputs). No mirror or host name is written here: whatever
# the machine already uses (a mirror, a proxy-rewritten or a local URI) is reused.
#
#   apt_source_entries [ROOT]            every enabled source of ROOT (default /etc/apt), one
#                                        line per type and suite: TYPE|OPTIONS|URI|SUITE|COMPONENTS
#   apt_source_entries_of_file FILE      the same for one file (FILE - : one-line format on stdin)
#   apt_has_suite SUITE [ROOT]           succeeds when an enabled deb source names SUITE
#   apt_backports_line CODENAME [ROOT]   the one-line source for CODENAME-backports, built from
#                                        the machine's own deb source for CODENAME (same URI,
#                                        signed-by/arch/trusted options and components); fails
#                                        when there is none
#   apt_setup_backports CODENAME [ROOT]  makes sure CODENAME-backports is configured (see there);
#                                        succeeds when it changed something (run apt-get update)
#
# Both formats apt reads are understood: one-line `deb [opts] URI SUITE COMPONENTS...` in
# sources.list and sources.list.d/*.list, and deb822 stanzas in sources.list.d/*.sources
# (Types/URIs/Suites/Components/Signed-By/Architectures/Trusted, Enabled: no honoured,
# continuation lines folded). Other files in sources.list.d are ignored, as apt does.

# The entries of one file, in the format of apt_source_entries: deb822 for *.sources, the
# one-line format otherwise (also for FILE "-", standard input).
apt_source_entries_of_file() {
    case $1 in
    *.sources)
        awk '
            function flush(   n, t, u, s, i, j, k, types, uris, suites, opts) {
                if (nfields == 0) return
                if (tolower(v["enabled"]) == "no") { delete v; nfields = 0; return }
                opts = ""
                # A Signed-By holding an inline key cannot go on one line: left out (apt
                # then uses its trusted keyrings).
                if (v["signed-by"] ~ /^\//) opts = "signed-by=" v["signed-by"]
                if (v["architectures"] != "") {
                    a = v["architectures"]; gsub(/ +/, ",", a)
                    opts = opts (opts == "" ? "" : " ") "arch=" a
                }
                if (tolower(v["trusted"]) == "yes") opts = opts (opts == "" ? "" : " ") "trusted=yes"
                n = split(v["types"], types, " ")
                split(v["uris"], uris, " ")
                k = split(v["suites"], suites, " ")
                for (i = 1; i <= n; i++)
                    for (j = 1; j <= k; j++)
                        print types[i] "|" opts "|" uris[1] "|" suites[j] "|" v["components"]
                delete v; nfields = 0
            }
            /^[ \t]*#/ { next }
            /^[ \t]*$/ { flush(); key = ""; next }
            /^[ \t]/ {
                # Continuation of the previous field.
                if (key != "") { line = $0; gsub(/^[ \t]+|[ \t]+$/, "", line); v[key] = v[key] (v[key] == "" ? "" : " ") line }
                next
            }
            {
                p = index($0, ":"); if (p == 0) next
                key = tolower(substr($0, 1, p - 1)); gsub(/[ \t]/, "", key)
                val = substr($0, p + 1); gsub(/^[ \t]+|[ \t]+$/, "", val); gsub(/[ \t]+/, " ", val)
                v[key] = val; nfields++
            }
            END { flush() }' "$1"
        ;;
    *)
        awk '
            { sub(/#.*/, "") }
            NF < 3 { next }
            {
                type = $1; i = 2; opts = ""
                if ($i ~ /^\[/) {
                    # Options: [a=b c=d] or [ a=b ], possibly over several fields.
                    o = $i
                    while (o !~ /\]$/ && i < NF) { i++; o = o " " $i }
                    i++
                    gsub(/^\[ *| *\]$/, "", o); gsub(/ +/, " ", o)
                    opts = o
                }
                if (type != "deb" && type != "deb-src") next
                if (i + 1 > NF) next
                uri = $i; suite = $(i + 1); comps = ""
                for (j = i + 2; j <= NF; j++) comps = comps (comps == "" ? "" : " ") $j
                print type "|" opts "|" uri "|" suite "|" comps
            }' "$1"
        ;;
    esac
}

apt_source_entries() {
    local root=${1:-/etc/apt} f
    for f in "$root/sources.list" "$root"/sources.list.d/*.list "$root"/sources.list.d/*.sources; do
        [ -f "$f" ] && apt_source_entries_of_file "$f"
    done
    return 0
}

apt_has_suite() {
    local suite=$1 root=${2:-/etc/apt}
    apt_source_entries "$root" | awk -F'|' -v s="$suite" '$1 == "deb" && $4 == s { found = 1 } END { exit !found }'
}

apt_backports_line() {
    local codename=$1 root=${2:-/etc/apt} line
    # The first source for CODENAME that carries `main` (QEMU is there), else the first one
    # with `main` added.
    line=$(apt_source_entries "$root" | awk -F'|' -v s="$codename" '
        function emit(opts, uri, comps) {
            print "deb " (opts == "" ? "" : "[" opts "] ") uri " " s "-backports " comps
        }
        $1 == "deb" && $4 == s && $3 !~ /^cdrom:/ {
            if ((" " $5 " ") ~ / main /) { emit($2, $3, $5); done = 1; exit }
            if (first == "") { first = 1; fo = $2; fu = $3; fc = ($5 == "" ? "main" : "main " $5) }
        }
        END { if (!done && first != "") emit(fo, fu, fc) }')
    [ -n "$line" ] || return 1
    echo "$line"
}

# Makes sure CODENAME-backports is an apt source, in ROOT/sources.list.d/CODENAME-backports.list
# (written with $SUDO), derived from the machine's own CODENAME source. A machine that has
# backports already is left alone, except for that file when it points elsewhere than the
# machine's own Debian source (older versions of qemu/setup.sh wrote a fixed host there, which
# fails behind a mirror): it is replaced, the old file kept beside it under a name apt ignores.
# Messages go to stderr. Succeeds when something was written, fails when nothing changed.
apt_setup_backports() {
    local codename=$1 root=${2:-/etc/apt} managed want mine ours
    managed=$root/sources.list.d/$codename-backports.list
    if ! want=$(apt_backports_line "$codename" "$root"); then
        apt_has_suite "$codename-backports" "$root" ||
            echo "setup: no enabled 'deb ... $codename' apt source to derive" \
                "$codename-backports from; add it by hand if QEMU >= 9 cannot be installed" >&2
        return 1
    fi
    if [ -f "$managed" ]; then
        mine=$(apt_source_entries_of_file "$managed" | awk -F'|' '{ print $3 }' | sort -u)
        ours=$(echo "$want" | apt_source_entries_of_file - | awk -F'|' '{ print $3 }')
        [ "$mine" = "$ours" ] && return 1
        echo "setup: $managed points at '${mine:-nothing}', not at this machine's $codename" \
            "source; replacing it (old file: $managed.replaced-by-kestrel-setup)" >&2
        ${SUDO:-} mv "$managed" "$managed.replaced-by-kestrel-setup"
    elif apt_has_suite "$codename-backports" "$root"; then
        return 1
    else
        echo "setup: adding $codename-backports (derived from this machine's $codename source)" >&2
    fi
    printf '# Written by qemu/setup.sh (kestrel) from this machine'"'"'s own %s source.\n%s\n' \
        "$codename" "$want" | ${SUDO:-} tee "$managed" >/dev/null
}
