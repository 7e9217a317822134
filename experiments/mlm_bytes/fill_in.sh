#!/usr/bin/env bash
# Fill-in examples of the miniature byte MLM on held-out sentences (from the evaluation topics;
# the whole word is hidden, as in training). Usage, from the repository root:
#   bash experiments/mlm_bytes/fill_in.sh WORKDIR/mini_bytes.pickle > experiments/mlm_bytes/fill_in.txt
set -euo pipefail
checkpoint="$1"
python="${PYTHON:-python}"
while IFS='|' read -r text mask; do
  echo "## ${text}  [hidden: ${mask}]"
  "${python}" -m perceiver_jax.fill_mask --config=configs/mlm.py:mini --checkpoint="${checkpoint}" \
    --text="${text}" --mask="${mask}" --top_k=3
  echo
done <<'SENTENCES'
The "-" (subtraction) operator yields the difference of its arguments.|difference
When a name is not bound, an attempt to evaluate it raises a "NameError" exception.|exception
The "if" statement is used for conditional execution:|conditional
The operator "not" yields "True" if its argument is false, "False" otherwise.|otherwise
This operation can be customized using the special "__mod__()" method.|customized
SENTENCES
