#!/usr/bin/env bash
# Builds a hypervisor ramdisk (a newc cpio archive, the hypervisor's initrd) from VM folders.
#
# Usage: qemu/mkramdisk.sh [--gzip] OUT VMDIR...
#
# Each VMDIR holds vm.toml and the files it names with `kernel`, `initrd`, `dtb` and the
# `file` of each [[disks]] table (paths relative to VMDIR; symlinks are followed). The archive gets one folder per VM, named after
# VMDIR's last component, holding vm.toml and exactly those files (see docs/ramdisk.md).
# Identical files are stored once (hard links), the archive is reproducible (fixed owners,
# times and inode numbers), and --gzip compresses it with gzip -9.
set -euo pipefail
log() { echo "mkramdisk: $*" >&2; }
die() { log "error: $*"; exit 1; }

gzip_out=0
while [ $# -gt 0 ]; do
    case $1 in
    --gzip) gzip_out=1; shift ;;
    -h | --help) sed -n '2,12p' "$0"; exit 0 ;;
    --) shift; break ;;
    -*) die "unknown option $1" ;;
    *) break ;;
    esac
done
[ $# -ge 2 ] || die "usage: $0 [--gzip] OUT VMDIR..."
out=$1
shift
for tool in cpio sha256sum; do
    command -v "$tool" >/dev/null || die "$tool is not installed"
done

# The string value of a top-level key of vm.toml: `key = "value"` or `key = 'value'`, up to the
# first [table] header. Empty if absent.
toml_string() { # file key
    awk -v key="$2" '
        /^[[:space:]]*\[/ { exit }
        {
            line = $0
            if (match(line, "^[[:space:]]*" key "[[:space:]]*=[[:space:]]*")) {
                rest = substr(line, RLENGTH + 1)
                q = substr(rest, 1, 1)
                if (q == "\"" || q == "\047") {
                    rest = substr(rest, 2)
                    end = index(rest, q)
                    if (end > 0) { print substr(rest, 1, end - 1); exit }
                }
                print "\001unparsable"; exit
            }
        }' "$1"
}

# The string values of `key` inside every [[table]] array-of-tables entry of vm.toml, one a
# line (\001unparsable for a value that is not a plain quoted string).
toml_table_strings() { # file table key
    awk -v table="$2" -v key="$3" '
        /^[[:space:]]*\[/ {
            line = $0
            gsub(/[[:space:]]/, "", line)
            inside = (line == "[[" table "]]")
            next
        }
        inside {
            line = $0
            if (match(line, "^[[:space:]]*" key "[[:space:]]*=[[:space:]]*")) {
                rest = substr(line, RLENGTH + 1)
                q = substr(rest, 1, 1)
                if (q == "\"" || q == "\047") {
                    rest = substr(rest, 2)
                    end = index(rest, q)
                    if (end > 0) { print substr(rest, 1, end - 1); next }
                }
                print "\001unparsable"
            }
        }' "$1"
}

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
pool=$stage/.pool
mkdir -p "$pool"
seen_names=" "

# Copies SRC to the staging path DST, hard-linking files with identical content.
stage_file() { # src dst
    local sum
    sum=$(sha256sum <"$1" | cut -d' ' -f1)
    if [ ! -f "$pool/$sum" ]; then
        cp -L "$1" "$pool/$sum"
        chmod 644 "$pool/$sum"
    fi
    mkdir -p "$(dirname "$2")"
    [ -e "$2" ] || ln "$pool/$sum" "$2"
}

for vmdir in "$@"; do
    [ -d "$vmdir" ] || die "$vmdir is not a directory"
    name=$(basename "$(cd "$vmdir" && pwd)")
    case $name in
    [A-Za-z0-9]*) ;;
    *) die "$vmdir: folder name '$name' must start with a letter or digit" ;;
    esac
    case $seen_names in *" $name "*) die "two VM folders are named '$name'" ;; esac
    seen_names="$seen_names$name "
    conf=$vmdir/vm.toml
    [ -f "$conf" ] || die "$vmdir has no vm.toml"
    stage_file "$conf" "$stage/root/$name/vm.toml"
    found_kernel=0
    files=()
    for key in kernel initrd dtb; do
        files+=("$key=$(toml_string "$conf" "$key")")
    done
    while IFS= read -r disk; do
        files+=("disks.file=$disk")
    done < <(toml_table_strings "$conf" disks file)
    for entry in "${files[@]}"; do
        key=${entry%%=*}
        path=${entry#*=}
        [ -n "$path" ] || continue
        case $path in
        $'\001'*) die "$conf: cannot read the value of '$key' (write $key = \"path\")" ;;
        /*) die "$conf: $key = \"$path\" must be relative to $vmdir" ;;
        ..|../*|*/..|*/../*) die "$conf: $key = \"$path\" must not contain '..'" ;;
        esac
        [ -f "$vmdir/$path" ] || die "$conf: $key = \"$path\", but $vmdir/$path does not exist"
        [ "$key" = kernel ] && found_kernel=1
        stage_file "$vmdir/$path" "$stage/root/$name/${path#./}"
    done
    [ $found_kernel -eq 1 ] || die "$conf does not name a kernel (kernel = \"Image\")"
    log "VM $name: $(cd "$stage/root/$name" && find . -type f | sed 's|^\./||' | LC_ALL=C sort | tr '\n' ' ')"
done

# Drop the pool so that every hard-link group is complete in the archive (newc stores the
# data with the last link of a group).
rm -rf "$pool"
find "$stage/root" -exec touch -h -d @0 {} +
mkdir -p "$(dirname "$out")"
(cd "$stage/root" && find . -mindepth 1 | sed 's|^\./||' | LC_ALL=C sort |
    cpio --quiet -o -H newc --reproducible --owner=0:0) >"$out.tmp"
if [ $gzip_out -eq 1 ]; then
    gzip -9 -n -c "$out.tmp" >"$out.tmp.gz"
    mv "$out.tmp.gz" "$out.tmp"
fi
mv "$out.tmp" "$out"
log "ok: $out ($(wc -c <"$out") bytes)"
