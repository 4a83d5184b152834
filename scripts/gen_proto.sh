#!/usr/bin/env bash
# The only writer of generated code: proto/ -> clients/python/hacs/<domain>/v1, and the
# vendored third-party contracts (proto/hacs/third_party) -> clients/python/hacs/third_party.
# Python modules (grpcio-tools) with typed stubs (mypy-protobuf .pyi files).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export PATH="$PWD/.venv/bin:$PATH"  # protoc finds the mypy plugins here
OUT=clients/python

# Remove what an earlier run generated, so a deleted .proto leaves nothing behind.
find "$OUT/hacs" -path "$OUT/hacs/client" -prune -o \
  \( -name '*_pb2*.py' -o -name '*_pb2*.pyi' -o -name 'py.typed' \) -print0 | xargs -0 rm -f
find "$OUT/hacs" -mindepth 1 -type d -empty -not -path "$OUT/hacs/client*" -delete

mapfile -t protos < <(cd proto && find hacs -name '*.proto' | sort)
"$PY" -m grpc_tools.protoc -Iproto \
  --python_out="$OUT" --grpc_python_out="$OUT" \
  --mypy_out="$OUT" --mypy_grpc_out="$OUT" \
  "${protos[@]}"

# PEP 561 markers so mypy and editors read the .pyi stubs.
for dir in $(cd proto && find hacs -name '*.proto' -exec dirname {} \; | sort -u); do
  touch "$OUT/$dir/py.typed"
done
echo "generated $(ls "${protos[@]/#/proto/}" | wc -l) protos into $OUT/hacs"
