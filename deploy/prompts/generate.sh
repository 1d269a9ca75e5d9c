#!/usr/bin/env bash
# Speaks the queue-announcement prompts media plays to waiting callers, offline, with
# espeak-ng, as media reads them: 8 kHz, mono, 16-bit PCM WAV, one file per prompt.
#
#   deploy/prompts/generate.sh OUT_DIR      → OUT_DIR/{en,es}/{name}.wav
#
# The set (texts below): `position` + `n-{1..99}` (the caller's position), `position-many`
# (beyond 99), `wait` + `n-{2..60}` + `minutes`, `wait-one`, `wait-short` (under a minute),
# `wait-long` (over an hour) and `thanks`. media composes an announcement from them
# (services/media/src/announce.rs) and refuses to start with announcements when one is
# missing or not in that format. Re-running regenerates nothing that exists (delete OUT_DIR
# to redo); a tenant wanting its own voice records the same names.
set -euo pipefail
out="${1:?usage: generate.sh OUT_DIR}"
command -v espeak-ng >/dev/null || { echo "generate.sh: espeak-ng is not installed" >&2; exit 1; }
command -v sox >/dev/null || { echo "generate.sh: sox is not installed" >&2; exit 1; }

# name|English|Spanish
texts='position|You are caller number|Usted es la llamada número
position-many|There are more than ninety-nine callers ahead of you.|Hay más de noventa y nueve llamadas delante de usted.
wait|Your estimated wait time is about|El tiempo de espera estimado es de unos
minutes|minutes.|minutos.
wait-one|Your estimated wait time is about one minute.|El tiempo de espera estimado es de un minuto.
wait-short|Your call will be answered in less than a minute.|Su llamada será atendida en menos de un minuto.
wait-long|Your estimated wait time is more than an hour.|El tiempo de espera estimado es de más de una hora.
thanks|Thank you for waiting. Please stay on the line.|Gracias por esperar. Por favor, no cuelgue.'

speak() { # lang voice text file
  local tmp
  [ -s "$4" ] && return 0
  tmp="$(mktemp --suffix=.wav)"
  espeak-ng -v "$2" -s 150 -w "$tmp" "$3"
  # 8 kHz mono 16-bit, peaks normalised to -3 dBFS; the silence espeak leaves around is kept
  # short (media adds its own pauses).
  sox -q "$tmp" -r 8000 -c 1 -b 16 -e signed-integer "$4.part.wav" silence 1 0.02 0.5% reverse silence 1 0.02 0.5% reverse gain -n -3
  mv "$4.part.wav" "$4"
  rm -f "$tmp"
}

for pair in en:en-us es:es; do
  lang="${pair%%:*}" voice="${pair#*:}"
  mkdir -p "$out/$lang"
  while IFS='|' read -r name en es; do
    if [ "$lang" = en ]; then text="$en"; else text="$es"; fi
    speak "$lang" "$voice" "$text" "$out/$lang/$name.wav"
  done <<<"$texts"
  for n in $(seq 1 99); do
    speak "$lang" "$voice" "$n" "$out/$lang/n-$n.wav"
  done
done
echo "[prompts] $(find "$out" -name '*.wav' | wc -l) prompts in $out" >&2
