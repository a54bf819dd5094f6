"""The llama.cpp baseline of `orion bench model`: what a user who runs a model without a
server would compare Orion with, on the same file and the same machine.

`python3 -c "$(this file)" MODEL THREADS TOKENS RUNS < PROMPTS` loads MODEL with
llama-cpp-python (llama.cpp's own kernels); PROMPTS is JSON: `prompt` and `long` (ChatML
text, control tokens included). RUNS times it reads the prompt in one batch, then generates
TOKENS tokens greedily (the likeliest each time, end tokens included, so every run is as long),
then reads the long prompt in one batch. It prints one JSON line: the median rates, measured
the way Orion's are (generation from the first token sampled to the last), the resident
memory the loaded model added, and llama.cpp's version and the CPU features it was built for.
"""

import json
import os
import statistics
import sys
import time

import llama_cpp
import numpy as np
from llama_cpp import Llama


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def main():
    path, threads, tokens, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    prompts = json.load(sys.stdin)
    before = rss_bytes()
    flash = os.environ.get("ORION_BENCH_FLASH_ATTN", "1") == "1"
    # A context just long enough for both prompts and the answer (llama.cpp allocates its
    # key-value cache for all of it at load), and batches as long, so that the long prompt is
    # read in one batch.
    llm = Llama(
        model_path=path,
        n_ctx=1024,
        n_batch=1024,
        n_ubatch=1024,
        n_threads=threads,
        n_threads_batch=threads,
        flash_attn=flash,
        verbose=False,
    )
    vocab = llm.n_vocab()
    loaded = rss_bytes() - before
    ids = llm.tokenize(prompts["prompt"].encode(), add_bos=False, special=True)
    long_ids = llm.tokenize(prompts["long"].encode(), add_bos=False, special=True)
    prompt_rates, generation_rates, long_rates = [], [], []
    for _ in range(runs):
        llm.reset()
        started = time.perf_counter()
        llm.eval(ids)
        read = time.perf_counter()
        for n in range(1, tokens + 1):
            logits = np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(vocab,))
            token = int(np.argmax(logits))
            if n < tokens:
                llm.eval([token])
        done = time.perf_counter()
        prompt_rates.append(len(ids) / (read - started))
        generation_rates.append(tokens / (done - read))
        llm.reset()
        started = time.perf_counter()
        llm.eval(long_ids)
        long_rates.append(len(long_ids) / (time.perf_counter() - started))
    print(
        json.dumps(
            {
                "loaded_bytes": loaded,
                "prompt_tokens": len(ids),
                "prompt_tokens_per_s": statistics.median(prompt_rates),
                "generation_tokens_per_s": statistics.median(generation_rates),
                "generated_tokens": tokens,
                "long_prompt_tokens": len(long_ids),
                "prompt_ids": ids,
                "long_prompt_ids": long_ids,
                "long_prompt_tokens_per_s": statistics.median(long_rates),
                "about": "%s, flash attention %s; %s"
                % (
                    llama_cpp.__version__,
                    "on" if flash else "off",
                    llama_cpp.llama_print_system_info().decode().strip(" |"),
                ),
            }
        )
    )


main()
