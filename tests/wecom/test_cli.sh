#!/usr/bin/env bash
# kmq-wecom verify-url and decrypt on Tencent's published URL-verification
# vector and on a POST body made with the same key (tests/wecom/
# post_vector.xml: kmq_wecom_encrypt of a kf_msg_or_event callback,
# timestamp 1476416373, nonce 47744683): exit 0 with the plaintext, 1 on a
# refusal with its code, 2 on bad arguments.
#   test_cli.sh <path to kmq-wecom>
set -uo pipefail
BIN=$1
DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export KMQ_WECOM_TOKEN=hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo
export KMQ_WECOM_AES_KEY=6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt
RID=ww1436e0e65a779aee
ECHO='fsi1xnbH4yQh0+PJxcOdhhK6TDXkjMyhEPA7xB2TGz6b+g7xyAbEkRxN/3cNXW9qdqjnoVzEtpbhnFyq6SVHyA=='
SIG=012bc692d0a58dd4b10f8dfe5c4ac00ae211ebeb
POST_SIG=$(sed -n 's/.*<MsgSignature><!\[CDATA\[\([0-9a-f]*\)\]\]>.*/\1/p' "$DIR/post_vector.xml")
fails=0
OUT=$(mktemp) ERR=$(mktemp)
trap 'rm -f "$OUT" "$ERR"' EXIT

# expect <name> <exit code> <stdout or -> <stderr pattern or -> -- args...
expect() {
  local name=$1 rc=$2 out=$3 err=$4
  shift 5
  "$BIN" "$@" >"$OUT" 2>"$ERR" </dev/null
  local got=$?
  if [[ $got != "$rc" ]]; then
    echo "FAIL $name: exit $got, want $rc; stderr: $(cat "$ERR")"; fails=$((fails + 1)); return
  fi
  if [[ $out != - && $(cat "$OUT") != "$out" ]]; then
    echo "FAIL $name: stdout '$(cat "$OUT")', want '$out'"; fails=$((fails + 1)); return
  fi
  if [[ $err != - ]] && ! grep -q -- "$err" "$ERR"; then
    echo "FAIL $name: stderr '$(cat "$ERR")' lacks '$err'"; fails=$((fails + 1)); return
  fi
  if grep -q -e "$KMQ_WECOM_TOKEN" -e "$KMQ_WECOM_AES_KEY" "$OUT" "$ERR"; then
    echo "FAIL $name: a secret was printed"; fails=$((fails + 1)); return
  fi
  echo "ok   $name"
}

V=(verify-url --receive-id "$RID" --timestamp 1476416373 --nonce 47744683)
expect vector 0 1288432023552776189 - -- "${V[@]}" --echostr "$ECHO" --signature "$SIG" --max-skew 0
expect vector-now 0 1288432023552776189 - -- "${V[@]}" --echostr "$ECHO" --signature "$SIG" --now 1476416400
expect stale 1 '' '-40100 STALE_TIMESTAMP' -- "${V[@]}" --echostr "$ECHO" --signature "$SIG"
expect bad-signature 1 '' '-40001 VALIDATE_SIGNATURE' -- "${V[@]}" --echostr "$ECHO" --signature "${SIG%b}c" --max-skew 0
expect wrong-corp 1 '' '-40005 VALIDATE_CORPID' -- verify-url --receive-id ww0000000000000000 --timestamp 1476416373 --nonce 47744683 --echostr "$ECHO" --signature "$SIG" --max-skew 0
expect missing-signature 2 '' 'missing --signature' -- "${V[@]}" --echostr "$ECHO"
expect missing-value 2 '' '--echostr needs a value' -- "${V[@]}" --echostr
expect unknown-flag 2 '' 'unknown flag --bogus' -- "${V[@]}" --bogus 1
expect bad-key 2 '' 'ILLEGAL_AES_KEY' -- "${V[@]}" --aes-key short --echostr "$ECHO" --signature "$SIG"
expect bad-skew 2 '' '--max-skew' -- "${V[@]}" --echostr "$ECHO" --signature "$SIG" --max-skew -1
for cmd in verify-url decrypt serve gateway; do
  if "$BIN" "$cmd" --help | grep -q KMQ_WECOM_AES_KEY; then echo "ok   help $cmd"
  else echo "FAIL help $cmd"; fails=$((fails + 1)); fi
done
expect no-command 2 '' 'unknown command' -- frobnicate

# gateway: arguments refused before anything starts (no broker needed).
G=(gateway --receive-id "$RID" --sync-topic s)
if "$BIN" gateway --help | grep -q KMQ_WECOM_SECRET; then echo "ok   help gateway secret"
else echo "FAIL help gateway secret"; fails=$((fails + 1)); fi
expect gw-no-out 2 '' 'no --out-topic' -- "${G[@]}"
expect gw-no-secret 2 '' 'KMQ_WECOM_SECRET' -- "${G[@]}" --out-topic o
export KMQ_WECOM_SECRET=gw-cli-secret-value
expect gw-bad-config 2 '' '-F /nonexistent.yaml' -- "${G[@]}" --out-topic o -F /nonexistent.yaml
expect gw-bad-listen 2 '' '--listen' -- "${G[@]}" --out-topic o --listen nowhere
expect gw-no-sync 2 '' 'missing --sync-topic' -- gateway --receive-id "$RID" --out-topic o
expect gw-verify-flag 2 '' '--echostr does not apply' -- "${G[@]}" --out-topic o --echostr x
if grep -q "$KMQ_WECOM_SECRET" "$OUT" "$ERR"; then echo "FAIL gateway printed the secret"; fails=$((fails + 1)); fi
unset KMQ_WECOM_SECRET

# decrypt reads the body on stdin.
D=(decrypt --receive-id "$RID" --timestamp 1476416373 --nonce 47744683 --max-skew 0)
dec() { # <name> <rc> <stdout pattern> <stderr pattern> <body file> args...
  local name=$1 rc=$2 out=$3 err=$4 body=$5
  shift 5
  "$BIN" "$@" <"$body" >"$OUT" 2>"$ERR"
  local got=$?
  if [[ $got != "$rc" ]] || { [[ $out != - ]] && ! grep -q -- "$out" "$OUT"; } ||
     { [[ $err != - ]] && ! grep -q -- "$err" "$ERR"; }; then
    echo "FAIL $name: exit $got (want $rc), stdout '$(cat "$OUT")', stderr '$(cat "$ERR")'"
    fails=$((fails + 1))
  else
    echo "ok   $name"
  fi
}
dec decrypt 0 '<OpenKfId><!\[CDATA\[wkAJ2GCAAAZSfhHCt7IFSvLKtMPxyJTw\]\]></OpenKfId>' - \
  "$DIR/post_vector.xml" "${D[@]}" --signature "$POST_SIG"
dec decrypt-bad-signature 1 - '-40001 VALIDATE_SIGNATURE' "$DIR/post_vector.xml" "${D[@]}" --signature "$SIG"
printf '<!DOCTYPE x [<!ENTITY e "x">]><xml><Encrypt>&e;</Encrypt></xml>' >"$OUT.doctype"
dec decrypt-doctype 1 - '-40002 PARSE_XML' "$OUT.doctype" "${D[@]}" --signature "$POST_SIG"
rm -f "$OUT.doctype"
dec decrypt-echostr-flag 2 - '--echostr does not apply' "$DIR/post_vector.xml" "${D[@]}" --signature "$POST_SIG" --echostr x

if ((fails)); then echo "$fails failed"; exit 1; fi
echo "all passed"
