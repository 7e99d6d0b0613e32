#!/bin/sh
# symbolize.sh BINARY < trace: turns backtrace_symbols' "BINARY(+0xOFF)" lines
# (failalloc's traces and leak reports) into function, file and line.
bin=$1
while IFS= read -r line; do
    off=$(printf '%s\n' "$line" | sed -n "s|^.*$(basename "$bin")(+\(0x[0-9a-f]*\)).*$|\1|p")
    if [ -n "$off" ]; then
        printf '  %s\n' "$(addr2line -f -C -p -e "$bin" "$off")"
    else
        printf '%s\n' "$line"
    fi
done
