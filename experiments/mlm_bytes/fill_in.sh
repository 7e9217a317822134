#!/usr/bin/env bash
# Fill-in examples of the miniature byte MLM on held-out sentences (from the evaluation
# topics). The model was trained to restore single hidden bytes (`configs/mlm.py:mini`), so
# each example hides one short run of bytes, marked [like this] below. Usage, from the
# repository root:
#   bash experiments/mlm_bytes/fill_in.sh WORKDIR/mini_bytes.pickle > experiments/mlm_bytes/fill_in.txt
set -euo pipefail
checkpoint="$1"
python="${PYTHON:-python}"
while IFS= read -r line; do
  prefix="${line%%[*}"
  rest="${line#*[}"
  hidden="${rest%%]*}"
  text="${prefix}${hidden}${rest#*]}"
  start=$(printf %s "${prefix}" | LC_ALL=C wc -c)
  end=$((start + $(printf %s "${hidden}" | LC_ALL=C wc -c)))
  echo "## ${line}"
  "${python}" -m perceiver_jax.fill_mask --config=configs/mlm.py:mini --checkpoint="${checkpoint}" \
    --text="${text}" --mask_span="${start}:${end}" --top_k=3
  echo
done <<'SENTENCES'
The "-" (subtraction) operator yields the diff[e]rence of its arguments.
When a name is not bound, an attempt to evaluate it raises a "NameError" e[x]ception.
The "if" statement is used for condition[a]l execution:
The operator "not" yields "True" if its argument is false, "False" othe[r]wise.
This operation can be customized using the special "__mod__()"[ ]method.
The "while" statement is used for repeated execution as long as an expression is [t]rue:
The "for" statement is used to iterate over the elements of a sequence (such as a string, tuple or list) or other iterable obj[ec]t:
The "match" and "case" keywords are so[f]t keywords.
The expression "x or y" first evaluates *x*; if *x* is true, its value is returned; otherwise, *y* is evaluated and the resulting value is return[ed].
This operation can be customized using the special "__add__()" and "__radd__()" me[thod]s.
SENTENCES
