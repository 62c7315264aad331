#!/usr/bin/env bash
# Runs inside the bare Debian container of `make fresh-test` (scripts/fresh-test.sh): a newcomer's
# first hour, as root. /fresh holds the repository bundle and receives the logs; PORT is free.
set -euo pipefail
step() { echo "=== fresh-test [$(date -u +%T)] $*"; }
fail() { echo "=== fresh-test FAILED: $*"; exit 1; }

# Debian's official container images ship this file: packages do not start their services during
# apt-get install in a container (a redis-server started by apt would hold port 6379 all along).
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
chmod +x /usr/sbin/policy-rc.d

step "apt-get install make git ca-certificates python3 curl (what a newcomer adds to a bare Debian 12)"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq make git ca-certificates python3 curl >/dev/null
# The network's TLS proxy CA, in the system trust store as on a machine behind it (fresh-test.sh
# mounts the host's bundle): pip, uv (the Makefile sets UV_SYSTEM_CERTS), curl and the image
# build's CA secret all read that store. update-ca-certificates warns that the bundle holds more
# than one certificate (its hashed-directory link skips it); the bundle file it writes has them all.
if [ -f /host-ca.crt ]; then
  cp /host-ca.crt /usr/local/share/ca-certificates/host-ca.crt
  update-ca-certificates >/dev/null
  step "the host's CA bundle is in the trust store (update-ca-certificates)"
fi
git -c advice.detachedHead=false clone -q /fresh/repo.bundle /root/housing-api
cd /root/housing-api
step "cloned $(git rev-parse --short HEAD) into $PWD; python3 is $(python3 --version); pip: $(python3 -m pip --version 2>&1 | head -c 60)"

# Not root: nothing can be installed, so make must stop with the one command to run.
useradd --create-home newcomer
git -c advice.detachedHead=false clone -q /fresh/repo.bundle /home/newcomer/housing-api
chown -R newcomer: /home/newcomer/housing-api
set +e
answer="$(cd /home/newcomer/housing-api && setpriv --reuid=newcomer --regid=newcomer --init-groups \
  env HOME=/home/newcomer make run PORT="$PORT" 2>&1)"
status=$?
set -e
echo "$answer" | sed 's/^/    /'
[ "$status" != 0 ] || fail "make run as a non-root user did not stop"
echo "$answer" | grep -q '^install-deps: missing .*; run: sudo apt-get update && sudo apt-get install -y' \
  || fail "make run as a non-root user did not print the apt-get command"
step "as a non-root user make run stopped with the one command to run (exit $status)"

step "make run PORT=$PORT as root (output in build/fresh/run.log)"
setsid make run PORT="$PORT" >/fresh/run.log 2>&1 &
run_pid=$!
deadline=$((SECONDS + 1200))
until curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null; do
  kill -0 "$run_pid" 2>/dev/null || { tail -n 30 /fresh/run.log; fail "make run exited before /readyz answered"; }
  [ "$SECONDS" -lt "$deadline" ] || { tail -n 30 /fresh/run.log; fail "/readyz did not answer within 20 minutes"; }
  sleep 2
done
step "/readyz: $(curl -s "http://127.0.0.1:$PORT/readyz")"

# The README's own curl example, with the port `make run` was given.
example="$(python3 - <<'EOF'
import re
readme = open("README.md").read()
blocks = re.findall(r"```bash\n(.*?)```", readme, flags=re.S)
print(next(b for b in blocks if "curl -s -X POST" in b))
EOF
)"
answer="$(bash -c "${example//:8000/:$PORT}")"
echo "$answer" | python3 -c '
import json, sys
body = json.load(sys.stdin)
predictions = body["prediction"]
assert len(predictions) == 4 and all(isinstance(p, float) for p in predictions), body
print("=== fresh-test README curl example: 4 predictions", [round(p, 4) for p in predictions])
' || fail "the README's curl example did not return four predictions: $answer"

kill -TERM -- "-$run_pid"
wait "$run_pid" || true
step "make run stopped; make test (output in build/fresh/test.log)"
set +e
make test TEST_JUNIT=/fresh/junit.xml 2>&1 | tee /fresh/test.log | tail -n 25
test_status=${PIPESTATUS[0]}
set -e
[ "$test_status" = 0 ] || fail "make test exited $test_status"
python3 scripts/check_skips.py /fresh/junit.xml README.md || fail "make test skipped tests the README does not allow"
step "PASSED: make run served the README's example and make test passed"
