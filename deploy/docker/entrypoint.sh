#!/bin/sh
# The image's entrypoint: the first argument names the program, the rest are its flags
# (every flag is also an environment variable, see the README).
set -eu
case "${1:-}" in
  command|processor|materializer|query|loadgen)
    program=$1
    shift
    exec "/usr/local/libexec/analytics/$program" "$@"
    ;;
  -h|--help|"")
    echo "usage: <command|processor|materializer|query|loadgen> [flags]   (each program has --help)"
    ;;
  *)
    echo "unknown program '$1': expected command, processor, materializer, query or loadgen" >&2
    exit 2
    ;;
esac
